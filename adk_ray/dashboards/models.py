"""Pick the stored MoG models the density pictures show: one representative seed per KD setting."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .mog import Mixture
from .style import axis_label, fmt_value

MAX_SETTINGS = 3
"""Distinct (target, K, β_KD, KD method) settings pictured; p′ and p″ do not depend on β or iterations."""
KD_KEYS = ("target", "n_final_modes", "kd_beta", "kd_method")


@dataclass
class Picture:
    label: str
    target: str
    seed: int | None
    p_prime: Mixture | None
    p_dprime: Mixture | None


def _mixture(row) -> Mixture | None:
    try:
        return Mixture.from_flat(row["weights"], row["means"], row["scales"])
    except Exception:  # noqa: BLE001 - a malformed row loses its picture, not the page
        return None


def representative_pictures(models: pd.DataFrame) -> tuple[list[Picture], int]:
    """Pictures for the smallest seed of each KD setting (at most MAX_SETTINGS) and how many settings exist."""
    if models.empty or "stage" not in models or "weights" not in models:
        return [], 0
    m = models[models["world"].eq("mog")] if "world" in models else models
    if "seed" in m and len(m):
        m = m[m["seed"] == m["seed"].min()]
    keys = [k for k in KD_KEYS if k in m]
    dprime = m[m["stage"] == "p_dprime"]
    prime = m[m["stage"] == "p_prime"]
    groups = list(dprime.groupby(keys, sort=True, dropna=False)) if keys and len(dprime) else []
    if not groups and len(prime):
        # p″ not stored (yet): still show p′ next to p*.
        groups = [((), prime.iloc[:0])]
    pictures = []
    for key, g in groups[:MAX_SETTINGS]:
        key = key if isinstance(key, tuple) else (key,)
        setting = dict(zip(keys, key)) if len(key) == len(keys) else {}
        row_dp = g.iloc[0] if len(g) else None
        # p′ of the same trial when stored, else any p′ of that seed and target.
        cand = prime
        if row_dp is not None and "trial_id" in prime:
            same = prime[prime["trial_id"] == row_dp.get("trial_id")]
            cand = same if len(same) else prime
        if "target" in setting and "target" in cand and len(cand[cand["target"] == setting["target"]]):
            cand = cand[cand["target"] == setting["target"]]
        row_p = cand.iloc[0] if len(cand) else None
        target = str(setting.get("target", (row_p if row_p is not None else {}).get("target", "single")) or "single")
        seed = (row_dp if row_dp is not None else row_p)
        label = ", ".join(f"{axis_label(k)}={fmt_value(v)}" for k, v in setting.items()) or "stored models"
        pictures.append(Picture(label=label, target=target,
                                seed=int(seed["seed"]) if seed is not None and "seed" in seed else None,
                                p_prime=_mixture(row_p) if row_p is not None else None,
                                p_dprime=_mixture(row_dp) if row_dp is not None else None))
    return pictures, len(groups)
