"""The LLM dashboard's "Text samples" section: what each model actually writes.

Researchers judge alignment by reading outputs; a reward-hacked or collapsed policy (the same phrase
over and over, or text that p_target scores highly but p* would never write) shows here before any
metric explains it. Reads `<results>/samples/*.parquet` (one file per trial, written by the service from
`TrialResult.samples`): per evaluated model the first few of its τ = 1 evaluation samples, and per
token set the first few of its sequences, each with its NLL under p_target and folded reward R.

One table per setting shown (trial, seed, iteration count): a column per model, in pipeline order
p*, p', p'', p''_KA, p'_AK, p''_AK, a row per sample. The training sets follow in a collapsed block.
Plain HTML tables, no figure: text is what is read here.
"""
from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

MODEL_ORDER = ("p*", "p'", "p''", "p''_KA", "p'_AK", "p''_AK")
MODEL_NOTES = {"p*": "ground truth (held-out)", "p'": "SFT on p*", "p''": "KD from p'", "p''_KA": "K-A: p'' aligned",
               "p'_AK": "A-K: p' aligned", "p''_AK": "A-K: p'_AK distilled"}
SETTINGS_SHOWN = 2
"""Tables drawn (the first settings by trial, seed, iterations); the rest are counted in a notice."""

CSS = """
table.samples{table-layout:fixed;width:100%}table.samples td,table.samples th{text-align:left;vertical-align:top}
table.samples td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word}
table.samples .score{display:block;color:#666;font-family:system-ui,sans-serif;font-size:11px;margin-top:2px}
table.samples .cut{color:#a67c00}table.samples .eos{color:#2a7d2a}
"""


def _cell(r) -> str:
    end = ("<span class='eos'>EOS</span>" if bool(r["ended"])
           else "<span class='cut'>cut at the length limit</span>")
    return (f"<td>{escape(str(r['text']))}<span class='score'>R {float(r['reward']):.3f} · NLL<sub>target</sub> "
            f"{float(r['nll_target']):.2f} · {int(r['num_tokens'])} tokens · {end}</span></td>")


def _model_table(df: pd.DataFrame) -> str:
    models = [m for m in MODEL_ORDER if m in set(df["model"])]
    head = "".join(f"<th>{escape(m)}<br><span class='muted'>{escape(MODEL_NOTES.get(m, ''))}</span></th>"
                   for m in models)
    means = "".join(
        f"<td><span class='score'>mean R {df[df.model == m]['reward'].mean():.3f} · mean NLL<sub>target</sub> "
        f"{df[df.model == m]['nll_target'].mean():.2f}</span></td>" for m in models)
    by_model = {m: df[df.model == m].sort_values("index").to_dict("records") for m in models}
    n = max(len(v) for v in by_model.values())
    body = []
    for i in range(n):
        body.append("<tr>" + "".join(_cell(by_model[m][i]) if i < len(by_model[m]) else "<td></td>"
                                     for m in models) + "</tr>")
    return f"<table class='samples'><tr>{head}</tr><tr>{means}</tr>{''.join(body)}</table>"


def _sets_table(df: pd.DataFrame) -> str:
    rows = []
    for name, g in df.groupby("token_set", sort=False):
        for r in g.sort_values("index").to_dict("records"):
            rows.append(f"<tr><th class='x'>{escape(str(name))}</th>{_cell(r)}</tr>")
    return f"<table class='samples'><tr><th style='width:12em'>token set</th><th>sample</th></tr>{''.join(rows)}</table>"


def text_samples_block(samples: pd.DataFrame, notices: list[str]) -> list[str]:
    """The section's HTML, or nothing when the results hold no samples (the MoG world, older runs)."""
    if samples is None or samples.empty or "model" not in samples or "text" not in samples:
        return []
    out = [f"<style>{CSS}</style><h2>Text samples</h2><div class='muted'>The first samples each model writes "
           "at τ = 1 (the ones its metrics read), decoded; R is the folded reward, NLL<sub>target</sub> the "
           "mean per-token negative log-likelihood under p_target. Aligned models are the checkpoints the "
           "selection rule picked. Read across a row: repetition or text p* would not write, at high R, is "
           "reward hacking.</div>"]
    models = samples[samples["model"].fillna("") != ""].copy()
    sets = samples[samples["model"].fillna("") == ""]
    if "iterations" not in models:
        models["iterations"] = np.nan
    # p*, p' and p'' do not depend on the iteration count: repeated in every table of their trial/seed.
    per_n = models[models["iterations"].notna()]
    settings = []
    for (tid, seed), g in models.groupby(["trial_id", "seed"], sort=True):
        counts = sorted(per_n[(per_n.trial_id == tid) & (per_n.seed == seed)]["iterations"].dropna().unique())
        for n in counts or [None]:
            part = g[g["iterations"].isna() | (g["iterations"] == n)] if n is not None else g
            settings.append(((tid, seed, n), part))
    if len(settings) > SETTINGS_SHOWN:
        notices.append(f"Text samples: showing {SETTINGS_SHOWN} of {len(settings)} settings "
                       f"(<results>/samples/ holds all).")
    config_cols = [c for c in ("algorithm",) if c in samples]
    for (tid, seed, n), part in settings[:SETTINGS_SHOWN]:
        what = ", ".join(f"{c} {part[c].dropna().iloc[0]}" for c in config_cols if part[c].notna().any())
        iters = f", {int(n)} iterations" if n is not None else ""
        out.append(f"<h3>Trial {escape(str(tid))}, seed {int(seed)}{escape(iters)}"
                   f"{' (' + escape(what) + ')' if what else ''}</h3>")
        out.append(_model_table(part))
    if not sets.empty:
        first = sets[sets["trial_id"] == sets["trial_id"].iloc[0]]
        first = first[first["seed"] == first["seed"].iloc[0]]
        out.append("<details><summary>Training and threshold token sets (first trial and seed)</summary>"
                   + _sets_table(first) + "</details>")
    return out
