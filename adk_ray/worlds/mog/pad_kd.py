"""Preference-Aligned Distillation (PAD) as a KD stage of the MoG world (PAD paper §4).

PAD distils the teacher's *preferences* over the student's own samples instead of fitting the
student to teacher samples (seqkd, `kd_methods.seqkd`). In this world a "response" is a point x in
R², its length-normalised log-likelihood (paper eq. 7) is the log-density, and there is no
multiple-choice calibration (α = 0 in eq. 9), so the teacher's reward is its log-density:

    teacher   p'_β(x) = Σ_k softmax(β_KD log α'_k) N(x; μ'_k, σ'_k²)   (the seqkd teacher, eq. 7 of
              the ADK paper: same β_KD sharpening, so KD strength is comparable across methods)
    rewards   r_tch(x) = log p'_β(x)  (detached),   r_stu(x) = log q_θ(x)  (with gradient)

Reference: "Capturing Nuanced Preferences: Preference-Aligned Distillation for Small Language
Models" (the PAD paper); equation numbers below are
that paper's. The losses themselves live in `adk_ray.objectives.pad`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from adk_ray.objectives.kd import kd_reweight_logits
from adk_ray.worlds.mog import model
from adk_ray.worlds.mog.noise import NoiseStream
from adk_ray.worlds.mog.slices import reads
from adk_ray.worlds.mog.stages import FitSettings, Progress, adam, check_finite, init_student, step

__all__ = ["PADSettings", "distill_pad", "tempered", "sample_tempered"]


@dataclass(frozen=True)
class PADSettings(FitSettings):
    """The settings slice of a PAD KD stage: seqkd's, and PAD's own (field names key the stage cache).
    The student draws batch_size samples per step, G = batch_size // pad_n groups."""

    pad_n: int = reads("pad_n")
    """Responses per group, n (PAD paper §4.1)."""
    pad_beta: float = reads("pad_beta")
    """Plackett–Luce inverse temperature β."""
    pad_temperature: float = reads("pad_temperature")
    """Sampling temperature τ of the student's responses."""

    def __post_init__(self) -> None:
        if self.pad_n < 2:
            raise ValueError(f"PAD needs pad_n >= 2 responses per group, got {self.pad_n}")
        if self.batch_size < self.pad_n:
            raise ValueError(f"batch_size {self.batch_size} is smaller than the PAD group size pad_n={self.pad_n}")
        if not self.pad_temperature > 0:
            raise ValueError(f"pad_temperature must be > 0, got {self.pad_temperature}")


def tempered(params: model.Params, temperature: float) -> model.Params:
    """The mixture whose samples stand for "sampling q at temperature τ": logits/τ, stds × √τ.

        α_k(τ) ∝ α_k^{1/τ}  (logits / τ),      σ_kd(τ) = σ_kd · √τ  (log σ + ½ log τ)

    For a single Gaussian this is exact: N(μ, σ²)^{1/τ} ∝ N(μ, τσ²). For a mixture it is an
    approximation of q^{1/τ}/Z (which is not a mixture of Gaussians): it tempers the choice of
    component and each component separately, ignoring the cross terms of (Σ_k α_k N_k)^{1/τ}; it is
    exact in the limit of well-separated components. τ = 1 returns the mixture unchanged.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return {"logits": params["logits"] / temperature, "means": params["means"],
            "log_scales": params["log_scales"] + 0.5 * math.log(temperature)}


def sample_tempered(params: model.Params, noise: Tensor, temperature: float) -> Tensor:
    """x [T, N, 2] from `tempered(params, temperature)` given standard normal noise [T, N, 3] (no gradient)."""
    with torch.no_grad():
        return model.sample(tempered(model.detach(params), temperature), noise)


def distill_pad(teacher: model.Params, kd_beta: Tensor, seeds, settings: PADSettings, *,
                loss: Callable[[Tensor, Tensor, float], Tensor],
                progress: Progress = None) -> model.Params:
    """p'' (or p''_AK) by PAD: a K-component MoG trained to share the sharpened teacher's preferences.

    Batched over the leading trial axis T (`seeds[t]` drives every draw of trial t; `kd_beta` [T]
    is each trial's β_KD). Per trial and step:

    1. Diverse responses (paper §4.1): the student draws `batch_size` points at temperature τ
       (see `tempered`), split into G = batch_size // n groups ("prompts") of n responses; the
       last batch_size − G·n draws, if any, are unused.
    2. Rewards (paper eq. 5–7, eq. 9 with α = 0): r_tch(y) = log p'_β(y) (detached),
       r_stu(y) = log q_θ(y) (the samples are detached; the gradient flows through the density).
    3. Preference distillation over Plackett–Luce rankings (paper eq. 2 / 6, with β = `pad_beta`),
       `loss(r_stu, r_tch, β)` over groups [T·G, n]: `objectives.pad.vpd_loss` or `ppd_loss`
       * VPD (eq. 10, as an NLL): τ = argsort_desc r_tch,
             L_VPD = −Σ_i log [exp(β r_stu(y^(τ_i))) / Σ_{j≥i} exp(β r_stu(y^(τ_j)))] = −log p_stu(τ)
       * PPD (eq. 11–12): p_tch, p_stu over all n! rankings, π_mix = (p_tch + p_stu)/2,
             L_PPD = ½ [KL(p_tch ‖ π_mix) + KL(p_stu ‖ π_mix)]
       No preference decomposition (eq. 13–14) is applied: each group of n is one preference;
       PPD costs O(n!·n) per group.

    The loss is the per-trial mean over its G groups, summed over trials, so each trial's gradient
    — and, Adam being elementwise, its whole trajectory — is the one it would have alone (as in
    `stages`). The student starts exactly like seqkd's (`stages.init_student` on the stream "kd").

    Raises:
        FloatingPointError: a parameter of some trial is non-finite at the end.
    """
    T, n = len(seeds), settings.pad_n
    G = settings.batch_size // n
    teacher = model.detach(teacher)
    teacher_logits = kd_reweight_logits(teacher["logits"], kd_beta)
    student = init_student(teacher, teacher_logits, seeds, settings.n_components, "kd")
    opt = adam(student.values(), settings.lr)
    noise = NoiseStream(seeds, "kd_pad/sample", (settings.batch_size, 3))
    for _ in range(settings.iterations):
        x = sample_tempered(student, noise.next()[:, : G * n], settings.pad_temperature)      # [T, G·n, 2]
        with torch.no_grad():
            r_tch = model.log_prob(teacher, x, teacher_logits)
        r_stu = model.log_prob(student, x)
        # The PAD losses average over every leading dim; over [T·G, n] that mean times T is
        # Σ_t (mean over trial t's G groups), since every trial has the same G.
        step(opt, loss(r_stu.reshape(T * G, n), r_tch.reshape(T * G, n), settings.pad_beta) * T)
        if progress:
            progress(1)
    check_finite(student, f"kd/{loss.__name__}")
    return model.detach(student)
