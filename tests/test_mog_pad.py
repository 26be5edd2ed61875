"""Tests for PAD distillation in the MoG world (adk_ray/worlds/mog/pad_kd.py)."""
from __future__ import annotations

import math

import pytest
import torch

from adk_ray.objectives.kd import kd_reweight_logits
from adk_ray.worlds.mog import model, stages, truth
from adk_ray.worlds.mog.noise import once
from adk_ray.worlds.mog.config import MoGTrialConfig
from adk_ray.worlds.mog.geometry import Geometry
from adk_ray.worlds.mog.kd_methods import KD_METHODS, seqkd
from adk_ray.worlds.mog.pad_kd import PADSettings, sample_tempered, tempered

Tensor = torch.Tensor

METHODS = ("pad_vpd", "pad_ppd")


def pad(method, teacher, kd_beta, seeds, k, iterations, batch_size, progress=None):
    """The table's PAD entry with the config's PAD defaults."""
    settings = PADSettings(k, iterations, 1e-2, batch_size, pad_n=4, pad_beta=10.0, pad_temperature=0.8)
    return KD_METHODS[method].distill(teacher, kd_beta, seeds, settings, progress=progress)


def six_mode_teacher(T: int) -> model.Params:
    """Six of p*'s eight modes with uneven ("random-ish") mixture weights, the same in every trial."""
    p = truth.ground_truth(Geometry(), T)
    keep = [0, 1, 2, 4, 6, 7]
    logits = torch.tensor([0.8, -0.3, 0.2, 1.0, -0.6, 0.0])
    return {"logits": logits.expand(T, 6).clone(), "means": p["means"][:, keep].clone(),
            "log_scales": p["log_scales"][:, keep].clone()}


def concordance(q: model.Params, teacher: model.Params, teacher_logits: Tensor, seeds, n: int = 4) -> Tensor:
    """Per-trial fraction of concordant pairs between log q and log p'_β within fresh groups of n.

    The groups are fresh draws from q at the PAD temperature 0.8 (the distribution PAD trains on),
    from a stream the training never uses.
    """
    T = len(seeds)
    x = sample_tempered(q, once(seeds, "test/pad_agreement", (512 * n, 3)), 0.8)
    a = model.log_prob(q, x).reshape(T, -1, n)
    b = model.log_prob(teacher, x, teacher_logits).reshape(T, -1, n)
    i, j = torch.triu_indices(n, n, 1)
    return (((a[..., i] - a[..., j]) * (b[..., i] - b[..., j])) > 0).float().mean((-1, -2))



@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_alone(method):
    teacher = six_mode_teacher(3)
    teacher["logits"] = torch.randn(3, 6, generator=torch.Generator().manual_seed(7))
    kd_beta = torch.tensor([1.0, 2.0, 3.0])
    batched = pad(method, teacher, kd_beta, [0, 1, 2], 4, 50, 32)
    alone = pad(method, model.index(teacher, [1]), kd_beta[1:2], [1], 4, 50, 32)
    for k in batched:
        torch.testing.assert_close(batched[k][1], alone[k][0], atol=1e-4, rtol=0)
    # and the trials really differ (so the comparison is not vacuous)
    assert not torch.allclose(batched["means"][0], batched["means"][1])


@pytest.mark.parametrize("method", METHODS)
def test_agreement_with_teacher_ranking_improves(method):
    seeds = [0, 1]
    teacher = six_mode_teacher(len(seeds))
    kd_beta = torch.full((len(seeds),), 2.0)
    logits = kd_reweight_logits(teacher["logits"], kd_beta)
    init = pad(method, teacher, kd_beta, seeds, 4, 0, 64)
    trained = pad(method, teacher, kd_beta, seeds, 4, 200, 64)
    before = concordance(init, teacher, logits, seeds).mean()
    after = concordance(trained, teacher, logits, seeds).mean()
    assert after > before + 0.05, (before, after)


def test_starts_where_seqkd_starts():
    seeds = [3, 5]
    teacher = six_mode_teacher(2)
    kd_beta = torch.tensor([1.0, 4.0])
    seqkd0 = seqkd(teacher, kd_beta, seeds, stages.FitSettings(4, 0, 1e-2, 64))
    for method in METHODS:
        pad0 = pad(method, teacher, kd_beta, seeds, 4, 0, 64)
        for k in seqkd0:
            torch.testing.assert_close(pad0[k], seqkd0[k], atol=0, rtol=0)


def test_progress_called_per_step_and_teacher_untouched():
    teacher = six_mode_teacher(1)
    before = model.detach(teacher)
    calls = []
    pad("pad_ppd", teacher, torch.ones(1), [0], 3, 5, 16, progress=calls.append)
    assert calls == [1] * 5
    for k in teacher:
        assert torch.equal(teacher[k], before[k])


def test_tempered_single_gaussian_is_exact():
    q = {"logits": torch.tensor([[0.3, -0.5]]), "means": torch.tensor([[[0.0, 1.0], [2.0, -1.0]]]),
         "log_scales": torch.tensor([[[0.1, -0.2], [0.0, 0.3]]])}
    tau = 0.5
    tq = tempered(q, tau)
    # weights ∝ α^{1/τ}
    alpha = model.weights(q)
    want = alpha ** (1 / tau) / (alpha ** (1 / tau)).sum(-1, keepdim=True)
    torch.testing.assert_close(model.weights(tq), want)
    # one component: log N(x; μ, τσ²) = (1/τ) log N(x; μ, σ²) + const, i.e. exactly p^{1/τ} normalised
    single = model.index(q, [0])
    single = {"logits": single["logits"][:, :1], "means": single["means"][:, :1], "log_scales": single["log_scales"][:, :1]}
    x = torch.randn(1, 50, 2, generator=torch.Generator().manual_seed(0))
    diff = model.log_prob(tempered(single, tau), x) - model.log_prob(single, x) / tau
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff))
    assert tempered(q, 1.0)["log_scales"].equal(q["log_scales"])
    # empirical std of a tempered sample shrinks by √τ
    xs = sample_tempered(single, once([0], "test/tempered", (20000, 3)), tau)
    torch.testing.assert_close(xs.std(1)[0], single["log_scales"][0, 0].exp() * math.sqrt(tau), atol=0.02, rtol=0)


def test_bad_pad_settings_are_rejected_by_the_config():
    with pytest.raises(ValueError, match="kd_method 'pad_dpo' is not one of seqkd, pad_vpd, pad_ppd"):
        MoGTrialConfig(kd_method="pad_dpo")
    with pytest.raises(ValueError, match="batch_size 2 is smaller than the PAD group size"):
        MoGTrialConfig(final_kd_method="pad_vpd", batch_size=2, ppo_minibatches=1)
    with pytest.raises(ValueError, match="pad_n >= 2"):
        MoGTrialConfig(kd_method="pad_ppd", pad_n=1)
    MoGTrialConfig(batch_size=2, ppo_minibatches=1)   # seqkd does not read the PAD settings
