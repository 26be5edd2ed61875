"""Direct Preference Optimisation, shared by both worlds."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dpo_logits(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, beta: Tensor | float) -> Tensor:
    """z = β [(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]  (Rafailov et al. 2023, eq. 7).

    The reference offset β log(π_ref(y_l)/π_ref(y_w)) inside z is the DPO learning trap of paper §3.4: a
    winner that is rare under π_ref makes z large before training, so σ(−z) and the gradient vanish.
    """
    return beta * ((logp_w - ref_logp_w) - (logp_l - ref_logp_l))


def dpo_loss(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, beta: Tensor | float) -> Tensor:
    """L_DPO = −log σ(z), per pair (Rafailov et al. 2023, eq. 7); z from `dpo_logits`."""
    return -F.logsigmoid(dpo_logits(logp_w, logp_l, ref_logp_w, ref_logp_l, beta))


def ipo_log_ratio(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor) -> Tensor:
    """h = log[π_θ(y_w) π_ref(y_l) / (π_θ(y_l) π_ref(y_w))]  (Azar et al. 2023, eq. 17): DPO's log-ratio
    difference without the β in front, i.e. `dpo_logits` at β = 1."""
    return (logp_w - ref_logp_w) - (logp_l - ref_logp_l)


def ipo_loss(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, beta: Tensor | float) -> Tensor:
    """L_IPO = (h − 1/(2β))², per pair (Azar et al. 2023, eq. 17, with their τ written β as in DPO).

    A squared loss instead of DPO's −log σ(βh): it regresses h onto the finite margin 1/(2β) rather than
    pushing it to +∞, so it does not saturate when π_ref already prefers y_w, and its gradient
    2(h − 1/(2β)) stays finite when π_ref(y_w) → 0 (h → +∞ then pulls h *down*, towards the margin).
    """
    return (ipo_log_ratio(logp_w, logp_l, ref_logp_w, ref_logp_l) - 1.0 / (2.0 * beta)) ** 2
