"""Distillation-side math: KD temperature reweighting and the LLM world's folded reward."""
from __future__ import annotations

import torch
from torch import Tensor


def kd_reweight_logits(mixture_logits: Tensor, kd_beta: Tensor | float) -> Tensor:
    """log α'_k(β_KD) = log softmax_k(β_KD · log α'_k)  (paper appendix A.1, eq. 7).

    β_KD ≥ 1 sharpens the teacher's mixture weights towards its dominant modes before KD sampling.
    `kd_beta` broadcasts against all but the last axis (one value per trial).
    """
    log_alpha = torch.log_softmax(mixture_logits, dim=-1)
    if isinstance(kd_beta, Tensor):
        kd_beta = kd_beta.unsqueeze(-1)
    return torch.log_softmax(kd_beta * log_alpha, dim=-1)


def nll_reward(nll: Tensor, scale: float = 10.0, c: float = 0.5) -> Tensor:
    """R_base(y) = 10 · exp(−C · NLL_target(y)), C = 0.5  (paper appendix C.3)."""
    return scale * torch.exp(-c * nll)


def fold_reward(reward: Tensor, threshold: Tensor | float) -> Tensor:
    """R = R_base if R_base ≤ τ_r else 2τ_r − R_base  (reward folding, paper appendix C.3).

    Folding at p_target's own 90th percentile penalises degenerate, over-likely text above it.
    """
    return torch.where(reward <= threshold, reward, 2 * threshold - reward)
