"""The MoG world's KD methods, one table: KD_METHODS maps each valid `kd_method` name to its settings
slice and its distil function. Every KD stage (p' → p'', and A-K's final p'_AK → p''_AK) goes
through it; adding a method is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import Tensor

from adk_ray.objectives.kd import kd_reweight_logits
from adk_ray.objectives.pad import ppd_loss, vpd_loss
from adk_ray.worlds.mog import model
from adk_ray.worlds.mog.pad_kd import PADSettings, distill_pad
from adk_ray.worlds.mog.stages import FitSettings, Progress, fit_to_samples


def seqkd(teacher: model.Params, kd_beta: Tensor, seeds, settings: FitSettings,
          progress: Progress = None) -> model.Params:
    """Sequence-level KD: maximum likelihood on samples of the teacher with weights
    softmax(β_KD log α') (paper appendix A.1, eq. 7). `kd_beta` [T] is each trial's β_KD."""
    logits = kd_reweight_logits(teacher["logits"], kd_beta)
    return fit_to_samples(teacher, logits, seeds, settings, "kd", progress)


@dataclass(frozen=True)
class KDMethod:
    """One entry of KD_METHODS."""

    settings: type
    """The settings slice (a frozen dataclass `slices.slice_of` fills; its fields key the stage cache)."""
    distill: Callable[..., model.Params]
    """distill(teacher, kd_beta [T], seeds, settings, progress=None) -> the K-component student."""


KD_METHODS: dict[str, KDMethod] = {
    "seqkd": KDMethod(FitSettings, seqkd),
    "pad_vpd": KDMethod(PADSettings, partial(distill_pad, loss=vpd_loss)),   # PAD paper eq. 10
    "pad_ppd": KDMethod(PADSettings, partial(distill_pad, loss=ppd_loss)),   # PAD paper eq. 11–12
}
