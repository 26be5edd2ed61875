"""Math tier for the MoG world's exact metrics (worlds/mog/exact.py) and the premise columns: each closed
form (or quadrature) against Monte Carlo at large n, the paper's geometry numbers, and the trap column."""
import math

import pytest
import torch

from adk_ray.pipeline.mog import run_trial
from adk_ray.worlds.mog import exact, model, stages, truth
from adk_ray.worlds.mog.config import MoGTrialConfig
from adk_ray.worlds.mog.geometry import MODE_VAR, TARGET_RADIUS, TRAP_FRACTION, Geometry

N = 400_000
SINGLE, DOUBLE = Geometry(), Geometry(target="double")


def _params(T=4, K=5, seed=0):
    """Random mixtures around the target: some components broad (std ≈ 1), some narrow (≈ 0.1)."""
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(T, K, generator=g),
            "means": torch.tensor([0.75, -1.5]) + 1.2 * torch.randn(T, K, 2, generator=g),
            "log_scales": -1.2 + 1.0 * torch.rand(T, K, 2, generator=g) * 2}


def _mc(q, f):
    """Monte-Carlo mean and standard error of f(x), x ~ q, in float64."""
    x = model.sample(q, torch.randn(q["logits"].shape[0], N, 3, generator=torch.Generator().manual_seed(1))).double()
    v = f(x)
    return v.mean(-1), v.std(-1) / math.sqrt(N)


def _log_normal(x, c):
    return -math.log(2 * math.pi * MODE_VAR) - ((x - torch.tensor(c, dtype=torch.float64)) ** 2).sum(-1) / (2 * MODE_VAR)


@pytest.mark.parametrize("geometry", [SINGLE, DOUBLE], ids=["single", "double"])
def test_target_precision_matches_monte_carlo(geometry):
    q = _params()
    cs = geometry.target_centres
    log_target = lambda x: torch.logsumexp(torch.stack([_log_normal(x, c) for c in cs]), 0) - math.log(len(cs))
    mean, se = _mc(q, log_target)
    got = exact.target_precision(q, geometry)
    assert ((got - mean).abs() < 4 * se + 1e-6).all(), (got, mean, se)


@pytest.mark.parametrize("geometry", [SINGLE, DOUBLE], ids=["single", "double"])
def test_expected_reward_matches_monte_carlo(geometry):
    q = _params(seed=2)
    mean, se = _mc(q, lambda x: truth.Reward(geometry)(x.float()).double())
    got = exact.expected_reward(q, geometry)
    assert ((got - mean).abs() < 4 * se + 1e-6).all(), (got, mean, se)


@pytest.mark.parametrize("geometry", [SINGLE, DOUBLE, Geometry(target="double", spacing=0.8)],
                         ids=["single", "double", "overlapping-boxes"])
def test_target_mass_matches_monte_carlo(geometry):
    q = _params(seed=3)
    cs = torch.tensor(geometry.target_centres, dtype=torch.float64)
    inside = lambda x: ((x[..., None, :] - cs).abs() <= TARGET_RADIUS).all(-1).any(-1).double()
    mean, se = _mc(q, inside)
    got = exact.target_mass(q, geometry)
    assert ((got - mean).abs() < 4 * se + 1e-6).all(), (got, mean, se)


def test_double_target_quadrature_against_a_fine_grid():
    """The one quadrature (two targets' Target Precision) against a dense 2-D Riemann sum, for a broad and a
    narrow component and one straddling the two targets' boundary."""
    q = {"logits": torch.zeros(3, 1), "means": torch.tensor([[[0.2, -1.0]], [[0.75, -1.5]], [[1.4, -1.6]]]),
         "log_scales": torch.log(torch.tensor([[[1.0, 0.8]], [[0.3, 0.3]], [[0.05, 0.1]]]))}
    got = exact.target_precision(q, DOUBLE)
    t = torch.linspace(-8, 8, 3201, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    x = torch.stack([xx.ravel(), yy.ravel()], -1)
    log_target = torch.logsumexp(torch.stack([_log_normal(x, c) for c in DOUBLE.target_centres]), 0) - math.log(2)
    for i in range(2):      # the narrowest component needs a finer grid than this; Monte Carlo covers it above
        mu, sd = q["means"][i, 0].double(), q["log_scales"][i, 0].double().exp()
        dens = torch.exp(-0.5 * (((x - mu) / sd) ** 2).sum(-1)) / (2 * math.pi * sd.prod())
        want = (dens * log_target).sum() * (t[1] - t[0]) ** 2
        assert got[i].item() == pytest.approx(want.item(), abs=1e-5)


def test_zero_weight_padding_changes_no_exact_metric():
    q = _params(T=2, K=3)
    padded = model.pad_components(q, 6)
    for f in (exact.target_precision, exact.expected_reward, exact.target_mass):
        for g in (SINGLE, DOUBLE):
            torch.testing.assert_close(f(padded, g), f(q, g), rtol=1e-12, atol=1e-12)


def test_p_star_numbers_and_figure_1_geometry():
    """p*'s Target Precision is −log(2πσ²) − (mean‖μ_k − c‖² + 2σ²)/(2σ²); the mean squared distance from
    mode #7 to the 8 modes is 3.5 s². Spacing 1.0 gives −34.842, the paper's Figure 1 (p′: −34.78);
    appendix A.1's spacing 1.5 gives −78.59."""
    for spacing, want in ((1.0, -34.8421), (1.5, -78.5921)):
        g = Geometry(spacing=spacing)
        tp = exact.target_precision(truth.ground_truth(g), g).item()
        assert tp == pytest.approx(-math.log(2 * math.pi * MODE_VAR) - (3.5 * spacing**2 + 2 * MODE_VAR) / (2 * MODE_VAR))
        assert tp == pytest.approx(want, abs=1e-3)
    # p*'s target mass: its own mode's box mass (the two neighbours, 1.5 away, add ~1e-6)
    inside_1d = math.erf(TARGET_RADIUS / math.sqrt(2 * MODE_VAR))
    assert exact.target_mass(truth.ground_truth(SINGLE), SINGLE).item() == pytest.approx(inside_1d**2 / 8, abs=2e-6)
    # p*'s expected reward: the mean over its 8 modes of 10·(1 + 2αv)^{-1}·exp(−α d²/(1 + 2αv)), d the distance
    # from the mode to mode #7 (1 + 2αv = 1.2)
    by_hand = sum(10 / 1.2 * math.exp(-2 * ((x - 1.5) ** 2 + (y + 1.5) ** 2) / 1.2) for x, y in SINGLE.centres) / 8
    assert exact.expected_reward(truth.ground_truth(SINGLE), SINGLE).item() == pytest.approx(by_hand, rel=1e-7)  # float32 parameters
    assert by_hand == pytest.approx(1.0907, abs=1e-4)


SMALL = dict(sft_iterations=60, kd_iterations=60, eval_samples=512, batch_size=64, iterations=(10,), eval_every=5)


def test_rows_carry_exact_metrics_standard_errors_and_their_seeds_trap():
    cfg = MoGTrialConfig(algorithm="ppo", seeds=(0, 1, 2), kd_beta=10.0, **SMALL)
    rows = run_trial(cfg).rows
    for r in rows:
        assert isinstance(r["trap"], bool) and r["precision_se"] > 0 and r["recall_se"] > 0
        assert 0 <= r["target_mass"] <= 1 and 0 <= r["reward_hit_share"] <= 1
    p_star_mass = exact.target_mass(truth.ground_truth(SINGLE), SINGLE).item()
    for seed in cfg.seeds:
        mine = [r for r in rows if r["seed"] == seed]
        (dprime,) = [r for r in mine if r["stage"] == "p_dprime"]
        assert dprime["trap"] == (dprime["target_mass"] < TRAP_FRACTION * p_star_mass)
        assert {r["trap"] for r in mine} == {dprime["trap"]}      # every row of the seed, finals and curves too


def test_evaluate_standard_errors_are_those_of_the_means():
    q = _params(T=1)
    out = stages.evaluate(q, [0], SINGLE, 4096)
    x_star = model.sample(truth.ground_truth(SINGLE), torch.randn(1, 4096, 3))
    assert out["recall_se"].item() == pytest.approx(model.log_prob(q, x_star).std().item() / 64, rel=0.2)


def test_grid_spacing_moves_p_star_and_keys_the_cache(tmp_path):
    cfg = MoGTrialConfig(algorithm="ppo", seeds=(0,), **SMALL)
    a = run_trial(cfg, cache_dir=str(tmp_path))
    b = run_trial(cfg.replace(grid_spacing=1.0), cache_dir=str(tmp_path))
    pp = lambda res: [r for r in res.rows if r["stage"] == "p_prime"][0]
    assert pp(a)["overall_recall"] != pp(b)["overall_recall"]       # a different p', not the cached one
    with pytest.raises(ValueError, match="grid_spacing"):
        MoGTrialConfig(grid_spacing=0.0)
    with pytest.raises(ValueError, match="grpo_kl"):
        MoGTrialConfig(grpo_kl="forward")
