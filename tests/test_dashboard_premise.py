"""Dashboards: the premise table and the K-A vs A-K comparison split by trap (dashboards/premise.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from adk_ray.dashboards import render_html
from adk_ray.dashboards.load import Results
from adk_ray.dashboards.premise import p_star_target_mass, premise_table, split_by_trap
from adk_ray.worlds.mog import exact, truth
from adk_ray.worlds.mog.geometry import TRAP_FRACTION, Geometry

METRICS = ("final_average_reward", "target_precision", "overall_recall", "overall_precision")


def _rows(trapped: dict[float, set[int]], seeds: int = 6) -> pd.DataFrame:
    """Rows of a two-β_KD sweep: p' and p'' per seed, and final models of both pipelines; A-K ahead by 1 on
    every metric where the seed is trapped, level where it is not."""
    rng = np.random.default_rng(0)
    out = []
    for kd_beta, bad in trapped.items():
        for s in range(seeds):
            trap = s in bad
            base = dict(status="ok", kd_beta=kd_beta, n_final_modes=4, beta=1.0, algorithm="ppo", seed=s, trap=trap,
                        trial_id=f"t{kd_beta}", reward_hit_share=0.0 if trap else 0.07)
            out.append({**base, "stage": "p_prime", "pipeline": "K-A", "target_mass": 0.07})
            out.append({**base, "stage": "p_dprime", "pipeline": "K-A", "target_mass": 0.001 if trap else 0.06})
            for pipeline in ("K-A", "A-K"):
                gain = 1.0 if (trap and pipeline == "A-K") else 0.0
                out.append({**base, "stage": "final", "pipeline": pipeline, "iterations": 300, "target_mass": 0.5,
                            **{m: 1 + gain + 0.01 * rng.standard_normal() for m in METRICS}})
    return pd.DataFrame(out)


def test_dashboard_p_star_mass_equals_the_worlds_exact_one():
    for g in (Geometry(), Geometry(target="double"), Geometry(spacing=1.0)):
        assert p_star_target_mass(g) == pytest.approx(exact.target_mass(truth.ground_truth(g), g).item(), rel=1e-6)


def test_premise_table_counts_trapped_seeds_per_setting():
    table = premise_table(_rows({1.25: set(), 10.0: {0, 3, 4}}))
    assert table["kd_beta"].tolist() == [1.25, 10.0]
    assert table["seeds"].tolist() == [6, 6] and table["trap"].tolist() == [0, 3]
    assert table["mass_min"].tolist() == [0.06, 0.001] and table["p_prime_mass"].tolist() == [0.07, 0.07]


def test_comparison_is_split_by_trap_with_counts():
    comp, order = split_by_trap(_rows({1.25: set(), 10.0: {0, 3, 4}}))
    assert order == ["all settings pooled · trap present", "all settings pooled · trap absent",
                     "β_KD=1.25 · trap absent", "β_KD=10 · trap present", "β_KD=10 · trap absent"]
    reward = comp[comp["metric"] == "final_average_reward"].set_index("x")
    assert reward.loc["β_KD=10 · trap present", "n_ka"] == 3 and reward.loc["β_KD=10 · trap absent", "n_ak"] == 3
    assert reward.loc["all settings pooled · trap absent", "n_ka"] == 9
    assert reward.loc["β_KD=10 · trap present", "diff"] == pytest.approx(1.0, abs=0.05)
    assert reward.loc["β_KD=10 · trap absent", "diff"] == pytest.approx(0.0, abs=0.05)


def test_page_shows_the_premise_and_says_when_no_seed_is_trapped():
    html = render_html(Results(rows=_rows({1.25: set(), 10.0: {1}}), models=pd.DataFrame(), sweep=None))
    assert "The premise: did p″ lose the target mode?" in html and "split by the trap" in html
    assert f"{TRAP_FRACTION:g} × p*" in html and "Could not draw" not in html
    html = render_html(Results(rows=_rows({1.25: set()}), models=pd.DataFrame(), sweep=None))
    assert "No seed&#x27;s p″ lost the target mode" in html
    # rows without the columns (the LLM world, older MoG results): no premise section at all
    html = render_html(Results(rows=_rows({1.25: set()}).drop(columns="trap"), models=pd.DataFrame(), sweep=None))
    assert "The premise" not in html
