"""Direct Preference Optimisation, shared by both worlds."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dpo_logits(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, beta: Tensor | float) -> Tensor:
    """z = β [(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]  (Rafailov et al. 2023, eq. 7).

    The reference offset β log(π_ref(y_l)/π_ref(y_w)) inside z is the DPO learning trap of SPEC §1: a
    winner that is rare under π_ref makes z large before training, so σ(−z) and the gradient vanish.
    """
    return beta * ((logp_w - ref_logp_w) - (logp_l - ref_logp_l))


def dpo_loss(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, beta: Tensor | float) -> Tensor:
    """L_DPO = −log σ(z), per pair (Rafailov et al. 2023, eq. 7); z from `dpo_logits`."""
    return -F.logsigmoid(dpo_logits(logp_w, logp_l, ref_logp_w, ref_logp_l, beta))
