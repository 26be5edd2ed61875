"""Math tier: each objective against values computed by hand."""
import math

import pytest
import torch

from adk_ray.objectives.dpo import dpo_logits, dpo_loss, ipo_log_ratio, ipo_loss
from adk_ray.objectives.kd import fold_reward, kd_reweight_logits, nll_reward
from adk_ray.objectives.rl import (gae, grpo_advantage, kl_k3, kl_reverse_surrogate, kl_shaped_reward, ppo_clipped_loss,
                                   value_loss)
from adk_ray.worlds.mog.aligners import GRPO_KL_FORMS


def test_kl_shaped_reward_by_hand():
    # R=3, log π=−1, log π_ref=−2, β=0.5: 3 − 0.5·(−1 − (−2)) = 2.5
    assert kl_shaped_reward(torch.tensor(3.0), torch.tensor(-1.0), torch.tensor(-2.0), 0.5).item() == pytest.approx(2.5)
    # π_ref → 0 drives the shaped reward to −∞: the learning trap
    assert kl_shaped_reward(torch.tensor(3.0), torch.tensor(-1.0), torch.tensor(-1e6), 0.5).item() < -1e5


def test_ppo_clipped_loss_by_hand():
    logp_old = torch.zeros(4)
    logp_new = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.1]))
    adv = torch.tensor([2.0, -2.0, -1.0, 1.0])
    # ratio 1.5, A>0: min(3, 1.2·2=2.4) = 2.4; ratio 1.5, A<0: min(−3, −2.4) = −3;
    # ratio 0.5, A<0: min(−0.5, 0.8·−1=−0.8) = −0.8; ratio 1.1 inside the clip: 1.1
    expected = -torch.tensor([2.4, -3.0, -0.8, 1.1])
    torch.testing.assert_close(ppo_clipped_loss(logp_new, logp_old, adv, 0.2), expected)


def test_value_loss_by_hand():
    torch.testing.assert_close(value_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0])), torch.tensor([0.5, 4.5]))


def test_gae_by_hand():
    r, v = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.5, 0.5, 0.5]])
    # γ=1, λ=0.5: δ = [1+0.5−0.5, 0+0.5−0.5, 2−0.5] = [1, 0, 1.5]; Â2=1.5, Â1=0+0.5·1.5=0.75, Â0=1+0.5·0.75=1.375
    adv, ret = gae(r, v, gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.375, 0.75, 1.5]]))
    torch.testing.assert_close(ret, adv + v)


def test_grpo_advantage_by_hand():
    r = torch.tensor([[1.0, 2.0, 6.0]])
    torch.testing.assert_close(grpo_advantage(r), torch.tensor([[-2.0, -1.0, 3.0]]))
    std = r.std()
    torch.testing.assert_close(grpo_advantage(r, std_normalize=True, eps=0.0), torch.tensor([[-2.0, -1.0, 3.0]]) / std)


def test_kl_k3_is_nonnegative_and_unbiased():
    assert kl_k3(torch.tensor(-1.0), torch.tensor(-1.0)).item() == 0.0
    # log ratio = ln 2: 2 − ln 2 − 1
    assert kl_k3(torch.tensor(0.0), torch.tensor(math.log(2))).item() == pytest.approx(1 - math.log(2))
    # E_{x~q}[k3] = KL(q‖p) for two Gaussians N(0,1), N(1,1): KL = 0.5
    x = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logq, logp = -0.5 * x**2, -0.5 * (x - 1) ** 2
    assert kl_k3(logq, logp).mean().item() == pytest.approx(0.5, abs=0.01)


def _on_policy_gradient(term, theta, logp_ref):
    """E_{x~π_θ}[∇_θ term(log π_θ(x), log π_ref(x))] by exact enumeration of a categorical π_θ = softmax(θ):
    the samples carry no gradient, so each outcome is weighted by its (detached) probability."""
    theta = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    (logp.exp().detach() * term(logp, logp_ref)).sum().backward()
    return theta.grad


def _kl_gradient(theta, logp_ref, reverse: bool):
    theta = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    kl = (logp.exp() * (logp - logp_ref)).sum() if reverse else (logp_ref.exp() * (logp_ref - logp)).sum()
    kl.backward()
    return theta.grad


@pytest.mark.parametrize("case", range(3))
def test_grpo_kl_forms_have_the_gradient_of_the_kl_they_claim(case):
    """'reverse': ∇ KL(π_θ‖π_ref); 'k3' as a loss: ∇ KL(π_ref‖π_θ) (rl.kl_k3's docstring); exact, 6 outcomes."""
    g = torch.Generator().manual_seed(case)
    theta = torch.randn(6, generator=g, dtype=torch.float64)
    logp_ref = torch.log_softmax(2 * torch.randn(6, generator=g, dtype=torch.float64), -1)
    reverse, forward = _kl_gradient(theta, logp_ref, True), _kl_gradient(theta, logp_ref, False)
    assert (reverse - forward).abs().max() > 1e-2           # the two directions differ here
    torch.testing.assert_close(_on_policy_gradient(GRPO_KL_FORMS["reverse"], theta, logp_ref), reverse)
    torch.testing.assert_close(_on_policy_gradient(GRPO_KL_FORMS["k3"], theta, logp_ref), forward)
    assert GRPO_KL_FORMS["reverse"] is kl_reverse_surrogate and GRPO_KL_FORMS["k3"] is kl_k3


def test_grpo_kl_forms_on_samples_of_a_gaussian_policy():
    """The same claims on a continuous policy N(θ, 1) against π_ref = N(0, ½²), 400k samples:
    KL(π_θ‖π_ref) = log ½ + 2(1 + θ²) − ½ has gradient 4θ; KL(π_ref‖π_θ) = log 2 + (¼ + θ²)/2 − ½ has θ.
    (π_ref narrower than π_θ keeps π_ref/π_θ bounded, so k3's gradient has finite variance.)"""
    theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x = (theta.detach() + torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    logp = -0.5 * (x - theta) ** 2
    logp_ref = -0.5 * (2 * x) ** 2 + math.log(2)
    for form, want in (("reverse", 4 * 0.7), ("k3", 0.7)):
        (grad,) = torch.autograd.grad(GRPO_KL_FORMS[form](logp, logp_ref).mean(), theta, retain_graph=True)
        assert grad.item() == pytest.approx(want, rel=0.02), form


def test_dpo_loss_by_hand():
    # z = β[(−1 − −2) − (−3 − −1)] = 0.5·3 = 1.5; loss = −log σ(1.5) = log(1 + e^−1.5)
    args = torch.tensor(-1.0), torch.tensor(-3.0), torch.tensor(-2.0), torch.tensor(-1.0)
    assert dpo_logits(*args, 0.5).item() == pytest.approx(1.5)
    assert dpo_loss(*args, 0.5).item() == pytest.approx(math.log1p(math.exp(-1.5)))


def test_dpo_gradient_vanishes_when_reference_dislikes_the_winner():
    # The DPO learning trap: a winner rare under π_ref (large z at init) gets almost no gradient.
    logp_w = torch.tensor(-1.0, requires_grad=True)
    dpo_loss(logp_w, torch.tensor(-1.0), torch.tensor(-30.0), torch.tensor(-1.0), 1.0).backward()
    assert abs(logp_w.grad.item()) < 1e-10


def test_ipo_loss_by_hand():
    # h = (−1 − −2) − (−3 − −1) = 3; margin 1/(2·0.5) = 1; loss = (3 − 1)² = 4, dL/dlogp_w = 2(h − 1) = 4.
    logp_w = torch.tensor(-1.0, requires_grad=True)
    rest = torch.tensor(-3.0), torch.tensor(-2.0), torch.tensor(-1.0)
    assert ipo_log_ratio(logp_w, *rest).item() == pytest.approx(3.0)
    loss = ipo_loss(logp_w, *rest, 0.5)
    assert loss.item() == pytest.approx(4.0)
    loss.backward()
    assert logp_w.grad.item() == pytest.approx(4.0)
    # At h = 1/(2β) the loss and its gradient are zero; past it IPO pulls h back (DPO never would).
    assert ipo_loss(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(-0.5), torch.tensor(0.0), 1.0).item() == 0.0


def test_ipo_keeps_a_gradient_when_reference_dislikes_the_winner():
    # Where DPO's gradient vanishes (test above), IPO's is 2(h − 1/(2β)) with h = 29: large and negative.
    logp_w = torch.tensor(-1.0, requires_grad=True)
    ipo_loss(logp_w, torch.tensor(-1.0), torch.tensor(-30.0), torch.tensor(-1.0), 1.0).backward()
    assert logp_w.grad.item() == pytest.approx(2 * (29.0 - 0.5))


def test_kd_reweight_logits_by_hand():
    alpha = torch.tensor([0.5, 0.3, 0.2])
    got = kd_reweight_logits(torch.log(alpha), 2.0).exp()
    torch.testing.assert_close(got, alpha**2 / (alpha**2).sum())
    torch.testing.assert_close(kd_reweight_logits(torch.log(alpha), 1.0).exp(), alpha)
    # per-trial β_KD broadcasts over trials
    batched = kd_reweight_logits(torch.log(alpha).expand(2, 3), torch.tensor([1.0, 2.0])).exp()
    torch.testing.assert_close(batched[1], alpha**2 / (alpha**2).sum())


def test_reward_folding_by_hand():
    assert nll_reward(torch.tensor(2.0)).item() == pytest.approx(10 * math.exp(-1.0))
    torch.testing.assert_close(fold_reward(torch.tensor([1.0, 4.0, 5.0]), 4.0), torch.tensor([1.0, 4.0, 3.0]))
