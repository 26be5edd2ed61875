"""The premise of a MoG sweep (docs/mog.md, "The premise"): did each seed's p'' lose the target mode, and
how do K-A and A-K compare where it did (trap present) and where it did not (trap absent)?

A sweep only tests the paper's claim where its reference p'' has lost the target (π_ref(y*) ≈ 0, §3.4), so
the page says in how many seeds that happened, per β_KD and K, and splits the K-A vs A-K comparison by it.
Reads the `trap`, `target_mass` and `reward_hit_share` columns (docs/results.md); draws nothing without them.
"""
from __future__ import annotations

import math
from html import escape

import numpy as np
import pandas as pd

from adk_ray.worlds.mog.geometry import MODE_VAR, TARGET_RADIUS, TRAP_FRACTION, Geometry

from . import fragments
from .sections import final_rows, setting_labels
from .style import axis_label, fmt_num, fmt_value
from .summary import compare, summarize

PREMISE_KEYS = ("kd_beta", "n_final_modes", "kd_method", "final_kd_method", "grid_spacing", "target")
"""What a p'' depends on besides its seed (of the columns a sweep may vary)."""


def p_star_target_mass(geometry: Geometry) -> float:
    """p*'s probability in the boxes [c − r, c + r]² around the target centres (worlds/mog/exact.py's
    target mass, here in plain math for the torch-free page; boxes of different targets assumed disjoint)."""
    sd = math.sqrt(MODE_VAR)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    total = 0.0
    for c in geometry.target_centres:
        for m in geometry.centres:
            total += math.prod(phi((c[d] + TARGET_RADIUS - m[d]) / sd) - phi((c[d] - TARGET_RADIUS - m[d]) / sd)
                               for d in range(2)) / len(geometry.centres)
    return total


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"] if "status" in rows else rows


def premise_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per p'' setting (β_KD, K, ...): seeds, seeds in the trap, p'' and p' target mass and p'''s
    sampling-trap share (medians, and the range of p'''s mass)."""
    ok = _ok(rows)
    refs = ok[ok["stage"].isin(["p_dprime", "p_prime"]) & ok["trap"].notna()] if "stage" in ok else ok.iloc[0:0]
    if refs.empty:
        return pd.DataFrame()
    keys = [k for k in PREMISE_KEYS if k in refs]
    varying = [k for k in keys if refs[k].nunique(dropna=False) > 1] or keys[:2]
    dprime = refs[refs["stage"] == "p_dprime"].drop_duplicates(keys + ["seed"])
    prime = refs[refs["stage"] == "p_prime"].drop_duplicates(keys + ["seed"])
    out = []
    for setting, d in dprime.groupby(varying, sort=True, dropna=False):
        setting = setting if isinstance(setting, tuple) else (setting,)
        sel = np.ones(len(prime), dtype=bool)
        for k, v in zip(varying, setting):
            sel &= (prime[k] == v).to_numpy() if k in prime else True
        out.append({**dict(zip(varying, setting)), "seeds": int(d["seed"].nunique()),
                    "trap": int(d.drop_duplicates("seed")["trap"].astype(bool).sum()),
                    "mass_median": float(d["target_mass"].median()), "mass_min": float(d["target_mass"].min()),
                    "mass_max": float(d["target_mass"].max()), "hit_median": float(d["reward_hit_share"].median()),
                    "p_prime_mass": float(prime[sel]["target_mass"].median()) if sel.any() else float("nan")})
    return pd.DataFrame(out).assign(_keys=[tuple(varying)] * len(out))


def _premise_html(table: pd.DataFrame, p_star_mass: float) -> str:
    keys = list(table["_keys"].iloc[0])
    head = "".join(f"<th>{escape(axis_label(k))}</th>" for k in keys) + (
        "<th>seeds</th><th>seeds with the trap</th><th>p″ target mass: median [min, max]</th>"
        "<th>p″ samples with R &gt; max/2 (median)</th><th>p′ target mass (median)</th>")
    body = []
    for r in table.itertuples():
        cells = "".join(f"<td>{escape(fmt_value(getattr(r, k)))}</td>" for k in keys)
        cls = "ka" if r.trap else ""
        body.append(f"<tr>{cells}<td>{r.seeds}</td><td class='{cls}'>{r.trap}</td>"
                    f"<td>{fmt_num(r.mass_median, 4)} [{fmt_num(r.mass_min, 4)}, {fmt_num(r.mass_max, 4)}]</td>"
                    f"<td>{fmt_num(r.hit_median, 4)}</td><td>{fmt_num(r.p_prime_mass, 4)}</td></tr>")
    return (f"<table class='premise'><tr>{head}</tr>{''.join(body)}</table>"
            f"<div class='muted'>Target mass: a model's exact probability within ±{fmt_value(TARGET_RADIUS)} (a box) "
            f"of the target centre; p*'s is {fmt_num(p_star_mass, 4)}. A seed's p″ is in the trap when its mass is "
            f"below {fmt_value(TRAP_FRACTION)} × p*'s = {fmt_num(TRAP_FRACTION * p_star_mass, 4)} (docs/mog.md). "
            "The sampling-trap share is the Monte-Carlo fraction of p″'s samples whose reward exceeds half its "
            "maximum: what an on-policy aligner started at p″ gets to see.</div>")


def split_by_trap(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The comparison table's data: per setting (and all settings pooled) × trap present / absent, the
    medians of both pipelines, their difference with its bootstrap CI and the seed counts."""
    finals = final_rows(rows)
    finals = finals[finals["trap"].notna()] if "trap" in finals else finals.iloc[0:0]
    if finals.empty:
        return pd.DataFrame(), []
    trap = finals["trap"].astype(bool).map({True: "trap present", False: "trap absent"})
    labels, order = setting_labels(finals.drop(columns=[c for c in ("trap",) if c in finals]))
    frames, all_order = [], []
    pooled = pd.Series("all settings pooled", index=finals.index)
    for lab, lab_order in ([(pooled, ["all settings pooled"])] if len(order) > 1 else []) + [(labels, order)]:
        x = lab + " · " + trap
        x_order = [f"{o} · {t}" for o in lab_order for t in ("trap present", "trap absent") if (x == f"{o} · {t}").any()]
        frames.append(compare(summarize(finals, x, x_order), x_order))
        all_order += x_order
    return pd.concat(frames, ignore_index=True), all_order


def premise_sections(rows: pd.DataFrame, geometry: Geometry, notices: list[str]) -> list[str]:
    """The premise table and the K-A vs A-K comparison split by trap; [] for rows without the columns."""
    if rows.empty or "trap" not in rows or rows["trap"].isna().all():
        return []
    table = premise_table(rows)
    out = ["<h2 id='premise'>The premise: did p″ lose the target mode?</h2>"]
    if table.empty:
        out.append("<div class='notice'>No reference models recorded yet.</div>")
    else:
        out.append(_premise_html(table, p_star_target_mass(geometry)))
        if int(table["trap"].sum()) == 0:
            notices.append("No seed's p″ lost the target mode (trap absent everywhere): this sweep compares K-A and "
                           "A-K where the low-recall trap of §3.4 does not arise.")
    comp, order = split_by_trap(rows)
    if order:
        out.append("<h2 id='by-trap'>K-A against A-K, split by the trap</h2>"
                   "<div class='muted'>Final models; medians over seeds, Δ = median A-K − median K-A with its "
                   "bootstrap 95% CI; the last column counts the seeds of each side.</div>")
        out.append(fragments.comparison_table(comp, order, "setting · trap"))
    return out
