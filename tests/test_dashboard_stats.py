"""Dashboards: the statistics and the choice of rows per section (no browser, no Ray)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from adk_ray.dashboards.mog import P_STAR, Mixture, reward
from adk_ray.dashboards.progress import trial_counts
from adk_ray.dashboards.sections import isin_values, plan_sections, select_rows, x_labels
from adk_ray.dashboards.stats import box_stats, bootstrap_median_diff, verdict


# --- bootstrap CI ---------------------------------------------------------------------------

def test_bootstrap_constant_samples_give_a_point_interval():
    d, lo, hi = bootstrap_median_diff([1.0] * 4, [3.0] * 3)
    assert (d, lo, hi) == (2.0, 2.0, 2.0)


def test_bootstrap_shifted_sample_brackets_the_shift():
    ka = np.arange(10.0)
    d, lo, hi = bootstrap_median_diff(ka, ka + 10)
    assert d == 10.0
    assert 0 < lo <= 10 <= hi
    assert verdict(lo, hi) == "A-K"
    assert verdict(*bootstrap_median_diff(ka + 10, ka)[1:]) == "K-A"


def test_bootstrap_width_matches_the_median_standard_error():
    # Two N(0,1) samples of n=400 differing by 0.5: the median's s.e. is sqrt(pi/2)/sqrt(n),
    # so the 95% CI of a difference of two medians is about ±1.96·sqrt(2)·1.2533/20 = ±0.17.
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(400), rng.standard_normal(400) + 0.5
    d, lo, hi = bootstrap_median_diff(a, b)
    assert lo < d < hi
    assert 0.10 < (hi - lo) / 2 < 0.26
    assert lo < 0.5 < hi


def test_bootstrap_is_deterministic_and_ignores_nans():
    a = [1.0, 2.0, np.nan, 3.0, 4.0]
    b = [2.0, 5.0, 6.0, np.nan]
    assert bootstrap_median_diff(a, b) == bootstrap_median_diff(a, b)
    assert bootstrap_median_diff(a, b)[0] == pytest.approx(5.0 - 2.5)
    assert all(np.isnan(bootstrap_median_diff([], b)))
    assert verdict(float("nan"), float("nan")) == ""


def test_box_stats_quartiles_and_tukey_fences():
    s = box_stats([1, 2, 3, 4, 100])
    assert (s["q1"], s["median"], s["q3"]) == (2, 3, 4)
    assert s["lowerfence"] == 1 and s["upperfence"] == 4  # 100 is beyond q3 + 1.5·IQR
    assert s["n"] == 5
    assert box_stats([np.nan])["n"] == 0


# --- sections from sweep.json sub-grids -------------------------------------------------------

SWEEP = {
    "name": "t", "fixed": {"algorithm": "ppo", "kd_beta": 1.25},
    "grid": [{"beta": [0.1, 0.5, 1.0], "iterations": [300]},
             {"beta": [1.0], "iterations": [100, 300, 1000]},
             {"kd_beta": [1.0, 2.0], "n_final_modes": [3, 4]}],
    "group_by": ["beta", "iterations", "kd_beta"], "trials": 9,
}


def _rows() -> pd.DataFrame:
    """Final rows of every trial of SWEEP: 2 seeds × 2 pipelines each."""
    trials = ([(b, 300, 1.25, 4) for b in (0.1, 0.5, 1.0)] + [(1.0, i, 1.25, 4) for i in (100, 1000)]
              + [(1.0, 300, kb, k) for kb in (1.0, 2.0) for k in (3, 4)])
    out = []
    for t, (b, it, kb, k) in enumerate(trials):
        for seed in (0, 1):
            for p in ("K-A", "A-K"):
                out.append({"trial_id": f"t{t}", "beta": b, "iterations": it, "kd_beta": kb, "n_final_modes": k,
                            "seed": seed, "pipeline": p, "stage": "final", "status": "ok",
                            "final_average_reward": 1.0, "target_precision": 0.0,
                            "overall_recall": 0.0, "overall_precision": 0.0})
    # A curve row and an error row must never enter a boxplot.
    out.append({**out[0], "stage": "curve", "step": 10})
    out.append({**out[0], "trial_id": "bad", "status": "error", "final_average_reward": None})
    return pd.DataFrame(out)


def test_beta_section_takes_only_its_sub_grid():
    rows = _rows()
    beta, iters, kd = plan_sections(SWEEP, rows)
    df = select_rows(beta, rows)
    assert sorted(df["beta"].unique()) == [0.1, 0.5, 1.0]
    assert set(df["iterations"]) == {300}
    # the kd_beta sub-grid's β=1.0, iterations=300 trials share the β value but not kd_beta=1.25
    assert set(df["kd_beta"]) == {1.25} and set(df["n_final_modes"]) == {4}
    assert len(df) == 3 * 2 * 2
    assert "Sweep over β" in beta.title and "iterations = 300" in beta.title


def test_iterations_section_holds_beta_at_one():
    rows = _rows()
    _, iters, _ = plan_sections(SWEEP, rows)
    df = select_rows(iters, rows)
    assert set(df["beta"]) == {1.0}
    assert sorted(df["iterations"].unique()) == [100, 300, 1000]
    assert set(df["kd_beta"]) == {1.25}  # held at sweep.json's fixed value
    labels, order = x_labels(iters, df)
    assert order == ["100", "300", "1000"]  # numeric, not lexicographic


def test_covarying_axes_split_the_categories_and_mode_holds_unnamed_axes():
    rows = _rows()
    _, _, kd = plan_sections(SWEEP, rows)
    assert kd.covarying == ["n_final_modes"]
    assert kd.held["beta"] is None  # not in that sub-grid nor fixed: the value most trials share
    df = select_rows(kd, rows)
    assert set(df["beta"]) == {1.0} and set(df["iterations"]) == {300}
    _, order = x_labels(kd, df)
    assert order == ["1 · final modes K=3", "1 · final modes K=4", "2 · final modes K=3", "2 · final modes K=4"]


def test_sections_inferred_without_sweep_json():
    rows = _rows()
    axes = [s.axis for s in plan_sections(None, rows)]
    assert set(axes) == {"beta", "iterations", "kd_beta", "n_final_modes"}


def test_axis_that_never_varies_still_gets_a_section():
    sweep = {"grid": [{"beta": [1.0], "iterations": [30]}], "group_by": ["beta"]}
    (s,) = plan_sections(sweep, _rows())
    assert s.axis == "beta" and s.held == {"iterations": [30]}


def test_isin_values_is_tolerant_for_floats():
    col = pd.Series([0.1 + 0.2, 0.5, np.nan])
    assert isin_values(col, [0.3]).tolist() == [True, False, False]
    assert isin_values(pd.Series(["seqkd", "pad_vpd"]), ["pad_vpd"]).tolist() == [False, True]


def test_trial_counts():
    rows = pd.DataFrame({"trial_id": ["a", "a", "b", "c", "c"],
                         "status": ["ok", "ok", "error", "error", "ok"]})
    assert trial_counts(rows, {"trials": 5}) == {"done": 2, "failed": 1, "pending": 2, "total": 5}
    # the service writes the planned trials as a list, with trial_count beside it
    assert trial_counts(rows, {"trials": [{}] * 4, "trial_count": 4})["pending"] == 1
    assert trial_counts(rows, None)["pending"] is None


# --- numpy MoG helper --------------------------------------------------------------------------

def test_mixture_density_and_reward():
    pts = np.array([[1.5, -1.5], [0.0, 0.0]])
    # p* at a centre: (1/8)·N(0; 0.05 I) plus negligible neighbours
    assert np.exp(P_STAR.log_density(pts[:1]))[0] == pytest.approx(1 / 8 / (2 * np.pi * 0.05), rel=1e-6)
    assert reward(pts, "single").tolist() == pytest.approx([10.0, 10 * np.exp(-2 * 4.5)])
    assert reward(np.array([[0.0, -1.5]]), "double")[0] == pytest.approx(10.0)
    mix = Mixture.from_flat([2.0, 2.0], [0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5])
    assert mix.weights.tolist() == [0.5, 0.5]
    x = mix.sample(20000, seed=1)
    assert x.mean(axis=0) == pytest.approx([0.5, 0.5], abs=0.02)
    # the grid density integrates to ~1
    from adk_ray.dashboards.mog import density_grid
    t, z = density_grid(mix, lim=4, n=161)
    assert z.sum() * (t[1] - t[0]) ** 2 == pytest.approx(1.0, abs=1e-3)


def test_one_seed_per_side_gives_no_interval():
    """A single value per pipeline (an LLM smoke run) has a difference but no honest CI, so no verdict."""
    from adk_ray.dashboards.stats import bootstrap_median_diff, verdict
    diff, lo, hi = bootstrap_median_diff([2.0], [1.5])
    assert diff == -0.5 and np.isnan(lo) and np.isnan(hi) and verdict(lo, hi) == ""
    diff, lo, hi = bootstrap_median_diff([2.0, 2.1], [1.5, 1.4])
    assert np.isfinite(lo) and np.isfinite(hi)
