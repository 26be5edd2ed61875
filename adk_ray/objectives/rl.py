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

    The KL-regularised RLHF reward (paper eq. 1, the "learning trap" of §3.4): as π_ref(x) → 0 the
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
    k3 = π_ref/π_θ − log(π_ref/π_θ) − 1  (Schulman 2020 "Approximating KL"; GRPO eq. 4).

    Its *value* estimates the reverse KL, but used as a loss term on samples of π_θ (no gradient through
    the samples) its expected gradient is E_{π_θ}[(1 − π_ref/π_θ) ∇log π_θ] = −Σ_x π_ref ∇log π_θ
    = ∇_θ KL(π_ref ‖ π_θ), the *forward* KL's (tested in tests/test_objectives.py)."""
    log_ratio = logp_ref - logp_policy
    return torch.exp(log_ratio) - log_ratio - 1.0


def kl_reverse_surrogate(logp_policy: Tensor, logp_ref: Tensor) -> Tensor:
    """A per-sample loss whose expected gradient on samples of π_θ is ∇_θ KL(π_θ ‖ π_ref):
    ℓ = sg(log π_θ(x) − log π_ref(x)) · log π_θ(x), sg = stop-gradient.

    Score function: ∇ KL(π_θ‖π_ref) = ∇ Σ_x π_θ (log π_θ − log π_ref) = E_{π_θ}[(log π_θ − log π_ref) ∇log π_θ]
    + E_{π_θ}[∇log π_θ], and the last term is 0 (Williams 1992). This is the reverse-KL anchor of the paper's
    §3.4 (the same gradient as PPO's shaped reward, eq. 1, with the KL part taken out of the advantage). Its
    value is not a KL estimate; use `kl_k3` to report one.
    """
    return (logp_policy - logp_ref).detach() * logp_policy


# -- per-token pieces of the LLM world's PPO and GRPO (TRL 0.9.6's PPOTrainer, the paper's version) ----------

def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ m·x / Σ m over `dim` (all axes when None); an empty mask gives 0, not NaN."""
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − μ) / sqrt(σ² + ε) over the entries where mask = 1 (TRL's masked_whiten):
    μ = masked mean, σ² = masked mean of (x − μ)² · n/(n − 1) (Bessel, n = Σ m; none when n ≤ 1).
    shift_mean=False adds μ back (whitens the scale only). Entries outside the mask are transformed too
    (the caller masks them)."""
    mean = masked_mean(values, mask)
    n = mask.sum()
    var = masked_mean((values - mean) ** 2, mask)
    if n > 1:
        var = var * n / (n - 1)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float = 0.2) -> Tensor:
    """L^V = ½ max((V − R̂)², (clip(V, V_old − ε, V_old + ε) − R̂)²), per token.

    The value update is clipped around the values of the sampling pass like the policy ratio (TRL's
    cliprange_value; the pessimistic max is OpenAI baselines' ppo2 and TRL 0.9.6's PPOTrainer.loss).
    """
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


def ppo_token_rewards(score: Tensor, logp_old: Tensor, logp_ref: Tensor, mask: Tensor, beta: Tensor | float) -> Tensor:
    """r_t = −β (log π_old(y_t) − log π_ref(y_t)) + R(y)·1[t = last response token], 0 outside the mask.

    The per-token form of `kl_shaped_reward` (TRL 0.9.6 PPOTrainer.compute_rewards, kl_penalty='kl'):
    the KL penalty is paid at every generated token, the sequence's score only where it ends, and GAE
    carries it back. `score` [B], the rest [B, T]; the mask is one contiguous run per row.
    """
    mask = mask.to(logp_old.dtype)
    count = mask.cumsum(-1)
    last = (count == mask.sum(-1, keepdim=True)) & (mask > 0)      # the final 1 of each row
    return kl_shaped_reward(score[:, None] * last, logp_old, logp_ref, beta) * mask


def grpo_token_loss(logp_new: Tensor, logp_old: Tensor, logp_ref: Tensor, advantages: Tensor, beta: Tensor | float,
                    clip: float = 0.2) -> Tensor:
    """ℓ_t = −min(ρ_t A, clip(ρ_t, 1−ε, 1+ε) A) + β · k3(π_θ, π_ref)_t,  ρ_t = π_θ(y_t)/π_old(y_t)
    (Shao et al. 2024, GRPO eq. 3 per token; TRL GRPOTrainer). Per token; the caller takes the masked mean."""
    return ppo_clipped_loss(logp_new, logp_old, advantages, clip) + beta * kl_k3(logp_new, logp_ref)
