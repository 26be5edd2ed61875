"""Tests for the PAD objectives (adk_ray/objectives/pad.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from adk_ray.objectives.pad import (
    all_rankings,
    calibrated_teacher_reward,
    decomposed,
    length_normalised_reward,
    mc_selection_log_probs,
    plackett_luce_log_prob,
    ppd_loss,
    ranking_distribution_log_probs,
    teacher_ranking,
    vpd_loss,
)

LOG2 = math.log(2.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- #
# Independent reference implementations (numpy, probability space, loops)
# --------------------------------------------------------------------------- #
def _np_pl_prob(scores: np.ndarray, ranking, beta: float) -> float:
    s = beta * np.asarray(scores, dtype=np.float64)
    p = 1.0
    for i in range(len(ranking)):
        rest = [s[j] for j in ranking[i:]]
        shift = max(rest)
        p *= math.exp(s[ranking[i]] - shift) / sum(math.exp(r - shift) for r in rest)
    return p


def _np_jsd(student: np.ndarray, teacher: np.ndarray, beta: float) -> float:
    n = len(student)
    perms = list(itertools.permutations(range(n)))
    p = np.array([_np_pl_prob(teacher, t, beta) for t in perms])
    q = np.array([_np_pl_prob(student, t, beta) for t in perms])
    m = 0.5 * (p + q)
    kl_pm = sum(pi * math.log(pi / mi) for pi, mi in zip(p, m) if pi > 0)
    kl_qm = sum(qi * math.log(qi / mi) for qi, mi in zip(q, m) if qi > 0)
    return 0.5 * (kl_pm + kl_qm)


# --------------------------------------------------------------------------- #
# Plackett-Luce
# --------------------------------------------------------------------------- #
def test_all_rankings_shape_and_content():
    for n in range(1, 6):
        r = all_rankings(n)
        assert r.dtype == torch.long
        assert r.shape == (math.factorial(n), n)
        assert len({tuple(row) for row in r.tolist()}) == math.factorial(n)
        assert torch.equal(r.sort(dim=-1).values, torch.arange(n).expand_as(r))
    assert all_rankings(3)[0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        all_rankings(0)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_pl_probabilities_sum_to_one(n):
    scores = torch.randn(5, n, generator=_gen(n), dtype=torch.float64) * 3
    for beta in (1.0, 10.0):
        lp = ranking_distribution_log_probs(scores, beta)
        assert lp.shape == (5, math.factorial(n))
        torch.testing.assert_close(
            lp.exp().sum(-1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12
        )


def test_pl_n2_is_bradley_terry_sigmoid():
    scores = torch.randn(7, 2, generator=_gen(1), dtype=torch.float64)
    beta = 2.5
    ranking = torch.tensor([0, 1]).expand(7, 2)
    got = plackett_luce_log_prob(scores, ranking, beta).exp()
    want = torch.sigmoid(beta * (scores[:, 0] - scores[:, 1]))
    torch.testing.assert_close(got, want)
    got_rev = plackett_luce_log_prob(scores, ranking.flip(-1), beta).exp()
    torch.testing.assert_close(got_rev, 1 - want)


def test_pl_hand_computed_n3():
    scores = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    # ranking y3 > y1 > y2 with beta = 1:
    # e^3/(e^1+e^2+e^3) * e^1/(e^1+e^2) * 1
    want = math.e**3 / (math.e + math.e**2 + math.e**3) * math.e / (math.e + math.e**2)
    got = plackett_luce_log_prob(scores, torch.tensor([2, 0, 1]), 1.0).exp().item()
    assert got == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.178911, abs=1e-6)  # 0.665241 * 0.268941
    # beta = 2 doubles every reward: y2 > y3 > y1
    want2 = math.e**4 / (math.e**2 + math.e**4 + math.e**6) * math.e**6 / (math.e**2 + math.e**6)
    got2 = plackett_luce_log_prob(scores, torch.tensor([1, 2, 0]), 2.0).exp().item()
    assert got2 == pytest.approx(want2, rel=1e-12)


def test_pl_matches_reference_and_broadcasts():
    n = 4
    scores = torch.randn(3, n, generator=_gen(2), dtype=torch.float64)
    lp = ranking_distribution_log_probs(scores, 1.7)
    for b in range(3):
        for k, tau in enumerate(itertools.permutations(range(n))):
            assert lp[b, k].exp().item() == pytest.approx(
                _np_pl_prob(scores[b].numpy(), tau, 1.7), rel=1e-10
            )


def test_pl_stable_for_large_scores():
    scores = torch.tensor([[-300.0, -250.0, -400.0, 500.0]], dtype=torch.float32)
    lp = ranking_distribution_log_probs(scores, 10.0)
    assert torch.isfinite(lp).all()
    assert lp.logsumexp(-1).abs().item() < 1e-4
    loss = ppd_loss(scores, scores.flip(-1), 10.0)
    assert torch.isfinite(loss)


def _pl_logcumsumexp(scores, ranking, beta):
    """Eq. 2 the direct way, suffix log-sum-exps by torch.logcumsumexp (what the recursion replaced)."""
    shape = torch.broadcast_shapes(scores.shape, ranking.shape)
    ordered = beta * scores.expand(shape).gather(-1, ranking.expand(shape))
    return (ordered - torch.logcumsumexp(ordered.flip(-1), -1).flip(-1)).sum(-1)


@pytest.mark.parametrize("n", [2, 4, 5])
def test_pl_recursion_matches_logcumsumexp_to_rounding(n):
    # float32 at the MoG world's scale: log-densities of -20..5 at beta = 10 (PAD's default)
    g = _gen(10 + n)
    scores = (torch.rand(64, n, generator=g) * 25 - 20).requires_grad_(True)
    table = all_rankings(n)
    got = plackett_luce_log_prob(scores.unsqueeze(-2), table, 10.0)
    want = _pl_logcumsumexp(scores.unsqueeze(-2), table, 10.0)
    # each term is o_i - s_i with |o_i|, |s_i| <= 200: a few float32 ulps of 200 (1.5e-5 each)
    assert (got - want).abs().max().item() <= 1e-4
    # gradients of a loss that weighs the rankings unevenly (sum p(tau) itself is constant, so its
    # gradient is pure rounding noise), against the float64 truth: as close as logcumsumexp's own
    w = torch.rand(got.shape, generator=g)
    (g1,) = torch.autograd.grad((got * w).sum(), scores)
    (g2,) = torch.autograd.grad((want * w).sum(), scores)
    s64 = scores.detach().double().requires_grad_(True)
    (g64,) = torch.autograd.grad((_pl_logcumsumexp(s64.unsqueeze(-2), table, 10.0) * w.double()).sum(), s64)
    err_new, err_old = (g1.double() - g64).abs().max().item(), (g2.double() - g64).abs().max().item()
    assert err_new <= max(2 * err_old, 1e-3 * g64.abs().max().item()), (err_new, err_old)
    # and it is not the same float computation: were it, this test would guard nothing new
    assert n == 2 or not torch.equal(got, want)


# --------------------------------------------------------------------------- #
# VPD
# --------------------------------------------------------------------------- #
def test_teacher_ranking_descending_stable():
    t = torch.tensor([[0.1, 0.7, -2.0, 0.7]])
    assert teacher_ranking(t).tolist() == [[1, 3, 0, 2]]


def test_vpd_equals_neg_log_pl_of_teacher_ranking():
    student = torch.randn(6, 4, generator=_gen(3), dtype=torch.float64)
    teacher = torch.randn(6, 4, generator=_gen(4), dtype=torch.float64)
    beta = 3.0
    per_example = []
    for b in range(6):
        tau = sorted(range(4), key=lambda i: -teacher[b, i].item())
        per_example.append(-math.log(_np_pl_prob(student[b].numpy(), tau, beta)))
    assert vpd_loss(student, teacher, beta).item() == pytest.approx(
        float(np.mean(per_example)), rel=1e-10
    )
    # VPD is minimised when the student agrees with the teacher's order.
    aligned = teacher * 5
    assert vpd_loss(aligned, teacher, beta) < vpd_loss(-aligned, teacher, beta)
    assert vpd_loss(aligned, teacher, beta) >= 0


def test_vpd_no_gradient_to_teacher():
    student = torch.randn(2, 3, requires_grad=True, generator=_gen(5))
    teacher = torch.randn(2, 3, requires_grad=True, generator=_gen(6))
    vpd_loss(student, teacher, 10.0).backward()
    assert student.grad is not None and teacher.grad is None


# --------------------------------------------------------------------------- #
# PPD (Jensen-Shannon)
# --------------------------------------------------------------------------- #
def test_ppd_matches_probability_space_reference():
    student = torch.randn(5, 4, generator=_gen(7), dtype=torch.float64)
    teacher = torch.randn(5, 4, generator=_gen(8), dtype=torch.float64)
    beta = 1.3
    want = np.mean([_np_jsd(student[b].numpy(), teacher[b].numpy(), beta) for b in range(5)])
    assert ppd_loss(student, teacher, beta).item() == pytest.approx(want, rel=1e-10)


def test_ppd_is_jsd_not_a_single_kl():
    s = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    t = torch.tensor([2.0, 0.0, 0.5], dtype=torch.float64)
    lp, lq = ranking_distribution_log_probs(t, 1.0), ranking_distribution_log_probs(s, 1.0)
    kl_tq = (lp.exp() * (lp - lq)).sum().item()
    kl_qt = (lq.exp() * (lq - lp)).sum().item()
    got = ppd_loss(s, t, 1.0).item()
    assert got != pytest.approx(kl_tq, rel=1e-3)
    assert got != pytest.approx(kl_qt, rel=1e-3)


def test_jsd_symmetric_zero_bounded_positive():
    g = _gen(9)
    for n in (2, 3, 4):
        s = torch.randn(8, n, generator=g, dtype=torch.float64)
        t = torch.randn(8, n, generator=g, dtype=torch.float64)
        for beta in (0.5, 10.0):
            a, b = ppd_loss(s, t, beta), ppd_loss(t, s, beta)
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
            assert ppd_loss(s, s, beta).abs().item() < 1e-12
            for i in range(8):
                v = ppd_loss(s[i], t[i], beta).item()
                assert 0 < v <= LOG2 + 1e-12
    # Disjoint supports in the limit -> log 2.
    s = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    extreme = ppd_loss(s * 100, -s * 100, 1.0).item()
    assert extreme == pytest.approx(LOG2, abs=1e-9)
    assert extreme <= LOG2 + 1e-12


def test_ppd_batch_is_mean_of_per_example():
    """The mixture M must be formed per example, never across the batch."""
    g = _gen(10)
    s = torch.randn(6, 3, generator=g, dtype=torch.float64) * 2
    t = torch.randn(6, 3, generator=g, dtype=torch.float64) * 2
    per = torch.stack([ppd_loss(s[i], t[i], 2.0) for i in range(6)])
    torch.testing.assert_close(ppd_loss(s, t, 2.0), per.mean())
    # Extra leading dims are batch dims too.
    torch.testing.assert_close(ppd_loss(s.reshape(2, 3, 3), t.reshape(2, 3, 3), 2.0), per.mean())
    # Mixing across the batch would give something else:
    lp = ranking_distribution_log_probs(t, 2.0).exp().mean(0)
    lq = ranking_distribution_log_probs(s, 2.0).exp().mean(0)
    m = 0.5 * (lp + lq)
    wrong = 0.5 * ((lp * (lp / m).log()).sum() + (lq * (lq / m).log()).sum())
    assert abs(wrong.item() - per.mean().item()) > 1e-3


# --------------------------------------------------------------------------- #
# Decomposition
# --------------------------------------------------------------------------- #
def test_decomposed_vpd_full_group_equals_full():
    g = _gen(11)
    s = torch.randn(4, 4, generator=g, dtype=torch.float64)
    t = torch.randn(4, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(decomposed(vpd_loss, s, t, 5.0, 4), vpd_loss(s, t, 5.0))
    torch.testing.assert_close(decomposed(ppd_loss, s, t, 5.0, 4), ppd_loss(s, t, 5.0))


def test_decomposed_vpd_is_nll_of_product_of_group_rankings():
    g = _gen(12)
    s = torch.randn(3, 6, generator=g, dtype=torch.float64)
    t = torch.randn(3, 6, generator=g, dtype=torch.float64)
    beta = 2.0
    want = []
    for b in range(3):
        nll = 0.0
        for start in (0, 2, 4):
            idx = [start, start + 1]
            tau = sorted(range(2), key=lambda i: -t[b, idx[i]].item())
            nll -= math.log(_np_pl_prob(s[b, idx].numpy(), tau, beta))
        want.append(nll)
    got = decomposed(vpd_loss, s, t, beta, 2)
    assert got.item() == pytest.approx(float(np.mean(want)), rel=1e-10)


def test_decomposed_ppd_is_sum_of_group_losses():
    g = _gen(13)
    s = torch.randn(5, 8, generator=g, dtype=torch.float64)
    t = torch.randn(5, 8, generator=g, dtype=torch.float64)
    beta = 1.5
    for m in (2, 4):
        want = sum(
            np.mean([_np_jsd(s[b, k : k + m].numpy(), t[b, k : k + m].numpy(), beta) for b in range(5)])
            for k in range(0, 8, m)
        )
        assert decomposed(ppd_loss, s, t, beta, m).item() == pytest.approx(want, rel=1e-10)


def test_decomposed_rejects_non_divisor():
    s = torch.zeros(2, 6)
    with pytest.raises(ValueError):
        decomposed(vpd_loss, s, s, 1.0, 4)
    with pytest.raises(ValueError):
        decomposed(ppd_loss, s, s, 1.0, 0)


# --------------------------------------------------------------------------- #
# Gradients
# --------------------------------------------------------------------------- #
def test_vpd_gradcheck():
    g = _gen(14)
    s = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: vpd_loss(x, t, 2.0), (s,))
    assert torch.autograd.gradcheck(lambda x: decomposed(vpd_loss, x, t, 2.0, 2), (s,))


def test_ppd_gradcheck():
    g = _gen(15)
    s = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: ppd_loss(x, y, 1.5), (s, t))
    assert torch.autograd.gradcheck(lambda x, y: decomposed(ppd_loss, x, y, 1.5, 2), (s, t))


def test_pl_gradcheck():
    g = _gen(16)
    s = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ranking_distribution_log_probs(x, 3.0), (s,))


# --------------------------------------------------------------------------- #
# Rewards
# --------------------------------------------------------------------------- #
def test_calibrated_teacher_reward_hand_values():
    r = torch.tensor([-1.0, -2.0])
    lps = torch.tensor([math.log(0.5), math.log(0.25)])
    got = calibrated_teacher_reward(r, lps)  # alpha = 0.8
    want = torch.tensor([0.2 * -1.0 + 0.8 * math.log(0.5), 0.2 * -2.0 + 0.8 * math.log(0.25)])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(calibrated_teacher_reward(r, lps, alpha=0.0), r)
    torch.testing.assert_close(calibrated_teacher_reward(r, lps, alpha=1.0), lps)
    torch.testing.assert_close(
        calibrated_teacher_reward(r, lps, alpha=0.5), torch.tensor([-0.8465736, -1.6931472])
    )
    with pytest.raises(ValueError):
        calibrated_teacher_reward(r, lps, alpha=1.5)


def test_length_normalised_reward_hand_values():
    lp = torch.tensor([[-1.0, -2.0, -3.0, float("-inf")], [-0.5, -0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    got = length_normalised_reward(lp, mask)
    torch.testing.assert_close(got, torch.tensor([-2.0, -0.5]))
    got_bool = length_normalised_reward(lp, mask.bool())
    torch.testing.assert_close(got_bool, torch.tensor([-2.0, -0.5]))
    with pytest.raises(ValueError):
        length_normalised_reward(lp, torch.zeros_like(mask))


def test_mc_selection_log_probs():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    got = mc_selection_log_probs(logits)
    z = math.log(math.e**2 + 1 + math.e)
    torch.testing.assert_close(got[0], torch.tensor([2 - z, -z, 1 - z]))
    torch.testing.assert_close(got[1], torch.full((3,), -math.log(3.0)))
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(2))
    # responses shown as letters (C, A, B): response 0 -> C, 1 -> A, 2 -> B
    order = torch.tensor([[2, 0, 1], [0, 1, 2]])
    mapped = mc_selection_log_probs(logits, order)
    torch.testing.assert_close(mapped[0], torch.tensor([1 - z, 2 - z, -z]))
