"""Policy-gradient objectives shared by both worlds (PPO, GRPO).

Every function is elementwise or reduces only the axis it names, and returns per-sample values: the
caller takes the mean it needs (per trial in the batched MoG world, masked over tokens in the LLM world).
A MoG policy gives one log-prob per sample; an LM gives a (masked) sum over tokens, or per-token values.
"""
from __future__ import annotations

import torch
from torch import Tensor


def kl_shaped_reward(reward: Tensor, logp_policy: Tensor, logp_ref: Tensor, beta: Tensor | float) -> Tensor:
    """r̃(x) = R(x) − β · log(π_θ(x) / π_ref(x)).

    The KL-regularised RLHF reward (paper eq. 1, SPEC §1 "learning trap"): as π_ref(x) → 0 the
    penalty drives r̃ → −∞, which is what keeps K-A from recovering a mode p'' dropped.
    """
    return reward - beta * (logp_policy - logp_ref)


def ppo_clipped_loss(logp_new: Tensor, logp_old: Tensor, advantages: Tensor, clip: float = 0.2) -> Tensor:
    """L^CLIP = −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A),  ρ = π_θ(x)/π_old(x)  (Schulman et al. 2017, eq. 7).

    Returned per sample (to be averaged by the caller); minimising it maximises the clipped surrogate.
    """
    ratio = torch.exp(logp_new - logp_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    return -torch.minimum(unclipped, clipped)


def value_loss(values: Tensor, returns: Tensor) -> Tensor:
    """L^V = ½ (V(s) − R̂)², per sample (Schulman et al. 2017, eq. 9, the V term)."""
    return 0.5 * (values - returns) ** 2


def gae(rewards: Tensor, values: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the last axis (time), with no bootstrap after the end.

    δ_t = r_t + γ V_{t+1} − V_t,  Â_t = Σ_l (γλ)^l δ_{t+l}  (Schulman et al. 2016, eq. 16);
    returns (advantages, returns = Â + V). A reverse scan: it is a recurrence, not a reduction.
    """
    T = rewards.shape[-1]
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    deltas = rewards + gamma * next_values - values
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        running = deltas[..., t] + gamma * lam * running
        adv[..., t] = running
    return adv, adv + values


def grpo_advantage(rewards: Tensor, std_normalize: bool = False, eps: float = 1e-6) -> Tensor:
    """Â_i = R_i − mean_j R_j  (optionally / std_j R_j), over the last axis, the group
    (Shao et al. 2024, GRPO outcome supervision; paper appendix A.2 uses the batch mean)."""
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    if std_normalize:
        centred = centred / (rewards.std(dim=-1, keepdim=True) + eps)
    return centred


def kl_k3(logp_policy: Tensor, logp_ref: Tensor) -> Tensor:
    """Unbiased, non-negative estimate of KL(π_θ ‖ π_ref) from samples of π_θ:
    k3 = π_ref/π_θ − log(π_ref/π_θ) − 1  (Schulman 2020 "Approximating KL"; GRPO eq. 4)."""
    log_ratio = logp_ref - logp_policy
    return torch.exp(log_ratio) - log_ratio - 1.0
