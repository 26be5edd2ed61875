"""The LLM world's KD methods, one table: KD_METHODS maps each valid `kd_method` name to what it does.

Every KD stage of the world (p' → p'', and A-K's final p'_AK → p''_AK) first trains the seqkd student
(causal-LM loss on the teacher's samples, appendix C.2); a PAD method then fine-tunes that student on
the teacher's preferences over the student's own samples (`pad_kd.py`, PAD paper §4) with its
preference loss. p_target, the oracle, is always seqkd. Adding a method is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from adk_ray.objectives.pad import ppd_loss, vpd_loss

PreferenceLoss = Callable[[Tensor, Tensor, float], Tensor]
"""loss(r_stu [G, m], r̂_tch [G, m], β) over Plackett–Luce rankings of m responses (objectives.pad)."""


@dataclass(frozen=True)
class KDMethod:
    """One entry of KD_METHODS."""

    preference_loss: PreferenceLoss | None
    """The PAD stage's loss on top of the seqkd student; None: the seqkd student is the result."""
    description: str
    """One line for docs and listings."""


KD_METHODS: dict[str, KDMethod] = {
    "seqkd": KDMethod(None, "sequence-level KD: causal-LM loss on the teacher's samples"),
    "pad_vpd": KDMethod(vpd_loss, "seqkd, then PAD with −log PL_stu(teacher's ranking) (PAD paper eq. 10)"),
    "pad_ppd": KDMethod(ppd_loss, "seqkd, then PAD with JSD(PL_tch ‖ PL_stu) over all rankings (PAD paper eq. 11–12)"),
}

PAD_METHODS = tuple(name for name, m in KD_METHODS.items() if m.preference_loss is not None)
"""The methods with a PAD stage (derived from the table)."""


def kd_method(name: str) -> KDMethod:
    """The table entry of `name`, or a one-line error listing the valid names."""
    if name not in KD_METHODS:
        raise ValueError(f"unknown kd_method {name!r}; valid: {', '.join(KD_METHODS)}")
    return KD_METHODS[name]


def preference_loss(name: str) -> PreferenceLoss:
    """The PAD loss of method `name`, or a one-line error when it has no PAD stage."""
    loss = kd_method(name).preference_loss
    if loss is None:
        raise ValueError(f"{name!r} has no PAD stage; PAD methods: {', '.join(PAD_METHODS)}")
    return loss
