"""The MoG world's fitting stages and metrics: SFT of p', the maximum-likelihood fit behind seqkd,
and the four metrics. Alignment is `aligners`, the KD methods are `kd_methods`.

Each stage is a pure function of (its settings, its input models, its seeds) and is batched over a
leading trial axis T: `seeds[t]` drives every draw of trial t. Losses are summed over trials of
per-trial means, so each trial's gradient — and, Adam being elementwise, its whole trajectory — is
the one it would have alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from adk_ray.columns import METRICS, MOG_EVAL_COLUMNS  # noqa: F401 - the keys `evaluate` returns
from adk_ray.worlds.mog import exact, model, truth
from adk_ray.worlds.mog.geometry import Geometry
from adk_ray.worlds.mog.noise import NoiseStream, once
from adk_ray.worlds.mog.slices import reads

INIT_SCALE = 0.5  # initial per-axis std of every fitted component: broad enough to see its neighbours
Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class FitSettings:
    """A KD stage's fit of a K-component MoG (seqkd; PAD extends it). The field names are the stage
    cache's key, so they stay as they are. SFT fills the same fields from its own config fields
    (`sft_settings`)."""

    n_components: int = reads("n_final_modes")
    """K of the fitted model."""
    iterations: int = reads("kd_iterations")
    """Adam steps, one fresh batch each."""
    lr: float = reads("lr")
    """Adam learning rate (appendix A.2)."""
    batch_size: int = reads("batch_size")
    """Samples per step."""


def sft_settings(cfg) -> FitSettings:
    """p''s fit: n_sft_modes components, sft_iterations steps."""
    return FitSettings(n_components=cfg.n_sft_modes, iterations=cfg.sft_iterations, lr=cfg.lr,
                       batch_size=cfg.batch_size)


def adam(params, lr: float) -> "FusedAdam":
    """Adam (the paper's optimiser for every stage), fused: on these tiny tensors torch.optim's default
    per-parameter loop costs more than the forward and backward passes together (~6× slower step)."""
    return FusedAdam(params, lr)


class FusedAdam:
    """Adam (Kingma & Ba 2015, Algorithm 1; β₁ = 0.9, β₂ = 0.999, ε = 1e-8, no weight decay) over a list
    of tensors: the update torch.optim.Adam(fused=True) makes, the same kernel (`torch._fused_adam_`)
    bit for bit, without its per-step Python (hooks, regrouping: ~4× the kernel's own time here) and
    without the import of torch._dynamo that constructing a torch.optim optimiser triggers (~1 s of
    CPU in every fresh trial process)."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.params: list[Tensor] = []
        self.exp_avg: list[Tensor] = []
        self.exp_avg_sq: list[Tensor] = []
        self.steps: list[Tensor] = []
        self.add(params)

    def add(self, params) -> None:
        """Train more tensors with the same settings (their own moments and step counts)."""
        for p in params:
            self.params.append(p)
            self.exp_avg.append(torch.zeros_like(p, memory_format=torch.preserve_format))
            self.exp_avg_sq.append(torch.zeros_like(p, memory_format=torch.preserve_format))
            self.steps.append(torch.zeros((), dtype=torch.float32, device=p.device))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # as torch.optim: a tensor without a gradient is skipped, its step count included
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        pick = lambda xs: [xs[i] for i in have]
        steps = pick(self.steps)
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(pick(self.params), [self.params[i].grad for i in have], pick(self.exp_avg),
                           pick(self.exp_avg_sq), [], steps, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                           weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False, grad_scale=None,
                           found_inf=None)


def init_student(teacher: model.Params, teacher_logits: Tensor, seeds, n_components: int, stream: str) -> model.Params:
    """A trainable K-component student on K samples of the teacher (see `model.init_from_samples`)."""
    points = model.sample(teacher, once(seeds, f"{stream}/init", (n_components, 3)), teacher_logits)
    return model.trainable(model.init_from_samples(points, INIT_SCALE))


def fit_to_samples(teacher: model.Params, teacher_logits: Tensor, seeds, settings: FitSettings, stream: str,
                   progress: Progress = None) -> model.Params:
    """Maximum-likelihood fit of a K-component MoG to fresh samples of a teacher, one batch per step.

    Serves SFT (teacher p*, its own weights) and sequence-level KD (teacher p', weights sharpened
    by β_KD).
    """
    student = init_student(teacher, teacher_logits, seeds, settings.n_components, stream)
    opt = adam(student.values(), settings.lr)
    data = NoiseStream(seeds, f"{stream}/data", (settings.batch_size, 3))
    source = model.sampler(teacher, teacher_logits)  # the teacher is frozen: its tables once, not per step
    for _ in range(settings.iterations):
        x = model.draw(source, data.next())
        step(opt, -model.log_prob(student, x).mean(-1).sum())
        if progress:
            progress(1)
    check_finite(student, stream)
    return model.detach(student)


def sft(seeds, settings: FitSettings, geometry: Geometry, progress: Progress = None) -> model.Params:
    """p': a K=6 MoG fitted by maximum likelihood to samples of p* (paper appendix A.1)."""
    p_star = truth.ground_truth(geometry, len(seeds))
    return fit_to_samples(p_star, p_star["logits"], seeds, settings, "sft", progress)


def step(opt: FusedAdam, loss: Tensor) -> None:
    opt.zero_grad()
    loss.backward()
    opt.step()


def check_finite(params: model.Params, where: str) -> None:
    for name, v in params.items():
        # −inf logits are components of weight 0 (see model.pad_components), not a divergence
        ok = torch.isfinite(v) | (v == -torch.inf) if name == "logits" else torch.isfinite(v)
        if not ok.all():
            bad = (~ok).reshape(v.shape[0], -1).any(-1).nonzero().flatten().tolist()
            raise FloatingPointError(f"non-finite {name} after {where} in trial(s) {bad}")


@torch.no_grad()
def evaluate(q: model.Params, seeds, geometry: Geometry, n_samples: int) -> dict[str, Tensor]:
    """The four metrics of paper eq. 5–6 and the premise figures of model q, each [T].

    Exact (`exact`): Final Average Reward E_{x~q}[R(x)], Target Precision E_{x~q}[log p_target(x)] and the
    target mass (q's probability in the boxes of half-side TARGET_RADIUS around the target centres).
    Monte Carlo with `n_samples` draws, densities exact: Overall Precision E_{x~q}[log p*(x)] and Overall
    Recall E_{x~p*}[log q(x)], each with its standard error (sample std / √n), and the sampling-trap
    figure `reward_hit_share`, the share of q's samples whose reward exceeds half its maximum.
    The same seed draws the same noise for every model evaluated, so differences between models
    are not Monte-Carlo noise.
    """
    T = len(seeds)
    p_star = truth.ground_truth(geometry, T)
    x_q = model.sample(q, once(seeds, "eval/q", (n_samples, 3)))
    x_star = model.sample(p_star, once(seeds, "eval/p_star", (n_samples, 3)))
    log_p_star, log_q = model.log_prob(p_star, x_q), model.log_prob(q, x_star)
    return {
        "final_average_reward": exact.expected_reward(q, geometry),
        "target_precision": exact.target_precision(q, geometry),
        "overall_precision": log_p_star.mean(-1),
        "overall_recall": log_q.mean(-1),
        "precision_se": _standard_error(log_p_star),
        "recall_se": _standard_error(log_q),
        "target_mass": exact.target_mass(q, geometry),
        "reward_hit_share": (truth.Reward(geometry)(x_q) > geometry.reward_scale / 2).double().mean(-1),
    }


def _standard_error(values: Tensor) -> Tensor:
    """std / √n of a Monte-Carlo mean over the last axis, in float64."""
    v = values.double()
    return v.std(-1) / math.sqrt(v.shape[-1])
