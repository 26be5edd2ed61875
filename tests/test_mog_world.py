"""Math tier for the MoG world: exact densities, batching invariance, determinism, the paper's premise."""
import math

import pytest
import torch
import torch.distributions as D

from adk_ray.pipeline.mog import run_batch, run_trial
from adk_ray.worlds.mog import model, stages, truth
from adk_ray.worlds.mog.aligners import ALIGNERS
from adk_ray.worlds.mog.geometry import Geometry
from adk_ray.worlds.mog.kd_methods import seqkd
from adk_ray.worlds.mog.config import MoGTrialConfig
from adk_ray.worlds.mog.noise import NoiseStream

METRICS = stages.METRICS
SMALL = dict(sft_iterations=60, kd_iterations=60, eval_samples=512, batch_size=64)


def _params(T=3, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(T, K, generator=g), "means": 2 * torch.randn(T, K, 2, generator=g),
            "log_scales": 0.3 * torch.randn(T, K, 2, generator=g) - 1.0}


def test_log_prob_matches_torch_distributions():
    p = _params()
    x = 2 * torch.randn(3, 50, 2, generator=torch.Generator().manual_seed(1))
    for t in range(3):
        ref = D.MixtureSameFamily(D.Categorical(logits=p["logits"][t]),
                                  D.Independent(D.Normal(p["means"][t], p["log_scales"][t].exp()), 1))
        torch.testing.assert_close(model.log_prob(p, x)[t], ref.log_prob(x[t]), atol=2e-4, rtol=1e-5)


def test_log_prob_underflow_clamp_keeps_values_and_bounds_gradients():
    # narrow components far apart, plus zero-weight padding: many exp() inputs below UNDERFLOW, as in the
    # p* metrics and trained models; the unclamped formula is the reference
    p = model.pad_components(_params(T=4, K=4, seed=3), 6)
    p["log_scales"] = p["log_scales"] - 1.5
    x = 3 * torch.randn(4, 200, 2, generator=torch.Generator().manual_seed(2))

    def plain(q):
        comp = torch.bmm(model.features(x), model.coefficients(q).transpose(1, 2))
        m = comp.detach().amax(-1, keepdim=True)
        assert ((comp - m) < model.UNDERFLOW).float().mean() > 0.2  # the case the clamp is for
        return (comp - m).exp().sum(-1).log() + m.squeeze(-1)

    q_new, q_old = model.trainable(p), model.trainable(p)
    new, old = model.log_prob(q_new, x), plain(q_old)
    assert torch.equal(new, old)  # the value, to the last bit
    new.sum().backward()
    old.sum().backward()
    for k in q_new:
        # gradients differ by no more than what subnormal terms carry (finite ones; padding's are 0 in both)
        g_new, g_old = q_new[k].grad.nan_to_num(), q_old[k].grad.nan_to_num()
        assert (g_new - g_old).abs().max() <= 1e-30, k


def test_fused_adam_is_torch_adam_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, generator=g), torch.randn(3, 4, 2, generator=g)]
    ours, theirs = [p.clone().requires_grad_() for p in params], [p.clone().requires_grad_() for p in params]
    a, b = stages.FusedAdam(ours[:1], 1e-2), torch.optim.Adam(theirs[:1], lr=1e-2, fused=True)
    a.add(ours[1:])
    b.add_param_group({"params": theirs[1:]})
    for i in range(20):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for ps, opt in ((ours, a), (theirs, b)):
            opt.zero_grad()
            for p, gr in zip(ps, grads):
                p.grad = None if i % 7 == 3 and p is ps[1] else gr.clone()  # a skipped tensor keeps its count
            opt.step()
    assert all(torch.equal(x, y) for x, y in zip(ours, theirs))
    assert not torch.equal(ours[0], params[0])


def test_sample_follows_weights_and_components():
    p = {"logits": torch.log(torch.tensor([[0.7, 0.3]])), "means": torch.tensor([[[-3.0, 0.0], [3.0, 0.0]]]),
         "log_scales": torch.log(torch.full((1, 2, 2), 0.1))}
    x = model.sample(p, torch.randn(1, 20_000, 3, generator=torch.Generator().manual_seed(0)))
    assert (x[0, :, 0] < 0).float().mean().item() == pytest.approx(0.7, abs=0.01)
    assert x[0, x[0, :, 0] > 0].std(0).mean().item() == pytest.approx(0.1, abs=0.01)


def test_truth_and_reward():
    single, double = Geometry(), Geometry(target="double")
    centres = truth.ground_truth(single)["means"][0]
    assert centres.shape == (8, 2) and not (centres == 0).all(-1).any()
    assert truth.Reward(single)(torch.tensor([1.5, -1.5])).item() == pytest.approx(10.0)
    # ‖x − c_t‖² = 1 → 10·e^−2
    assert truth.Reward(single)(torch.tensor([0.5, -1.5])).item() == pytest.approx(10 * math.exp(-2))
    # 'double' uses the nearest target centre
    assert truth.Reward(double)(torch.tensor([0.0, -1.5])).item() == pytest.approx(10.0)
    # p*'s own overall precision is its negative entropy: log N at the mode − 1 − log 8
    p_star = truth.ground_truth(single)
    x = model.sample(p_star, torch.randn(1, 100_000, 3, generator=torch.Generator().manual_seed(0)))
    expected = -math.log(2 * math.pi * 0.05) - 1 - math.log(8)
    assert model.log_prob(p_star, x).mean().item() == pytest.approx(expected, abs=0.02)


def test_noise_stream_ignores_batching_and_length():
    a = NoiseStream([0, 1, 2], "s", (5, 3))
    b = NoiseStream([1], "s", (5, 3))
    draws_a = torch.stack([a.next() for _ in range(70)])      # crosses a chunk boundary
    draws_b = torch.stack([b.next() for _ in range(70)])
    torch.testing.assert_close(draws_a[:, 1], draws_b[:, 0], rtol=0, atol=0)
    assert not torch.equal(draws_a[:, 0], draws_a[:, 1])


def _by_seed(result, seed):
    rows = [r for r in result.rows if r["seed"] == seed]
    return {(r["pipeline"], r["stage"], r["iterations"], r["step"]): [r[m] for m in METRICS] for r in rows}


@pytest.mark.parametrize("algorithm", sorted(ALIGNERS))
def test_batched_run_of_a_seed_equals_that_seed_alone(algorithm):
    cfg = MoGTrialConfig(algorithm=algorithm, beta=0.5, iterations=(15, 30), eval_every=15, **SMALL)
    batched = run_trial(cfg.replace(seeds=(0, 1, 2)))
    alone = run_trial(cfg.replace(seeds=(1,)))
    got, want = _by_seed(batched, 1), _by_seed(alone, 1)
    assert got.keys() == want.keys() and len(got) == 2 + 1 + 2 * 3 + 2 * 3   # p' ×2, p'', 3 curve pts ×2, 3 finals ×2
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-4), k


def test_grid_points_batch_like_separate_trials_and_iterations_are_prefixes():
    cfg = MoGTrialConfig(algorithm="ppo", seeds=(3, 4), **SMALL)
    together = run_batch([cfg.replace(beta=0.1, iterations=(10,)), cfg.replace(beta=2.0, iterations=(10, 25))])
    apart = run_trial(cfg.replace(beta=2.0, iterations=(10,)))
    finals = lambda res, beta: {(r["pipeline"], r["seed"]): [r[m] for m in METRICS] for r in res.rows
                                if r["stage"] == "final" and r["beta"] == beta and r["iterations"] == 10}
    want = finals(apart, 2.0)
    for k, v in finals(together, 2.0).items():
        assert v == pytest.approx(want[k], rel=1e-4, abs=1e-4)


def test_rerun_is_bit_identical():
    cfg = MoGTrialConfig(algorithm="grpo", seeds=(5,), iterations=(12,), **SMALL)
    assert run_trial(cfg).rows == run_trial(cfg).rows


def test_stage_cache_reuses_p_prime(tmp_path):
    cfg = MoGTrialConfig(algorithm="dpo_online", seeds=(0, 1), iterations=(5,), **SMALL)
    first = run_trial(cfg, str(tmp_path))
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert len(files) == 4                                                   # p' and p'' for two seeds
    steps = []
    run_trial(cfg.replace(beta=2.0), str(tmp_path), lambda stage, done, total: steps.append(stage))
    assert "sft" not in steps and "kd" not in steps                          # shared stages came from disk
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == files
    p_prime = lambda res: [r for r in res.rows if r["stage"] == "p_prime"]
    assert [r["overall_recall"] for r in p_prime(first)] == [r["overall_recall"] for r in p_prime(run_trial(cfg))]


def test_config_rejects_bad_values():
    for bad, word in [(dict(beta=-1.0), "beta"), (dict(seeds=()), "seeds"), (dict(algorithm="sac"), "algorithm"),
                      (dict(kd_beta=0.5), "kd_beta"), (dict(n_final_modes=7), "n_final_modes")]:
        with pytest.raises(ValueError, match=word):
            MoGTrialConfig(**bad)
    with pytest.raises(ValueError, match="unknown key.*valid keys"):
        MoGTrialConfig.from_dict({"betta": 1.0})


def test_premise_p_prime_covers_more_than_p_dprime():
    """Science tier, a robust direction only: KD with β_KD = 10 lowers overall recall (paper Fig. 1)."""
    seeds = list(range(4))
    p_prime = stages.sft(seeds, stages.FitSettings(6, 2000, 1e-2, 256), Geometry())
    p_dprime = seqkd(p_prime, torch.full((4,), 10.0), seeds, stages.FitSettings(4, 2000, 1e-2, 256))
    recall = lambda q: stages.evaluate(q, seeds, Geometry(), 4096)["overall_recall"]
    assert (recall(p_prime) > recall(p_dprime)).all()


def test_final_kd_method_changes_only_the_a_k_final_model():
    cfg = MoGTrialConfig(algorithm="grpo", seeds=(0,), iterations=(10,), **SMALL)
    seq, pad = run_trial(cfg), run_trial(cfg.replace(final_kd_method="pad_vpd"))
    for a, b in zip(seq.rows, pad.rows):
        same = (a["pipeline"], a["stage"]) != ("A-K", "final")
        assert ([a[m] for m in METRICS] == [b[m] for m in METRICS]) == same, (a["pipeline"], a["stage"])


def test_padding_with_zero_weight_components_changes_nothing():
    p = _params(T=2, K=4)
    padded = model.pad_components(p, 6)
    x = 2 * torch.randn(2, 300, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.log_prob(padded, x), model.log_prob(p, x), rtol=0, atol=1e-6)
    noise = torch.randn(2, 5000, 3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.sample(padded, noise), model.sample(p, noise), rtol=0, atol=0)
    # a gradient step leaves the padding at weight 0 and finite elsewhere
    q = model.trainable(padded)
    opt = stages.adam(q.values(), 1e-2)
    (-model.log_prob(q, x).mean()).backward()
    opt.step()
    assert (q["logits"][:, 4:] == -torch.inf).all() and torch.isfinite(q["logits"][:, :4]).all()
    assert torch.isfinite(q["means"]).all() and torch.isfinite(q["log_scales"]).all()
    assert model.first_components(model.detach(q), 4)["means"].shape == (2, 4, 2)
