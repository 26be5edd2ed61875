"""The MoG world's aligners, one table: ALIGNERS maps each valid `algorithm` name to what it needs.

An entry holds the aligner's settings slice (a frozen dataclass built from the flat trial config),
its start (the state it keeps: PPO's value baseline, the offline pair pool, its noise streams) and
its per-step update, and a line on what it samples. `align` runs any of them the same way.
The policy is the MoG itself, there is one "prompt", and a response is a point x ∈ R² (paper §4.1,
appendix A.2); every aligner here is a score-function method (no gradient flows into samples).

Adding an aligner is one entry here: config validation, sweeps, `--list` and docs read the keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from adk_ray.objectives.dpo import dpo_loss, ipo_loss
from adk_ray.objectives.rl import (grpo_advantage, kl_k3, kl_reverse_surrogate, kl_shaped_reward, ppo_clipped_loss,
                                   value_loss)
from adk_ray.worlds.mog import model, truth
from adk_ray.worlds.mog.geometry import Geometry
from adk_ray.worlds.mog.noise import NoiseStream, normal_to_uniform, once
from adk_ray.worlds.mog.slices import reads, slice_of
from adk_ray.worlds.mog.stages import FusedAdam, Progress, adam, check_finite, step


@dataclass
class Run:
    """What every aligner's update reads: the policy it trains, its anchor, the shared optimiser."""

    policy: model.Params
    """π_θ, trainable, initialised at π_ref."""
    ref: model.Params
    """π_ref, frozen."""
    ref_coef: Tensor
    """π_ref's `model.coefficients`, computed once: π_ref does not change."""
    opt: FusedAdam
    """Adam over the policy's parameters."""
    seeds: list[int]
    """Seed of each trial (row of the batch)."""
    beta: Tensor
    """[T, 1]: each trial's KL coefficient β."""
    reward: Callable[[Tensor], Tensor]
    """The oracle R(x)."""
    batch_size: int
    """Samples (or pairs) per step."""


class Update(Protocol):
    def step(self) -> None:
        """One alignment iteration."""


# ------------------------------------------------------------------------------------------ PPO

@dataclass(frozen=True)
class PPOSettings:
    clip: float = reads("ppo_clip")
    """Clipping ε of the surrogate."""
    epochs: int = reads("ppo_epochs")
    """Passes over each sampled batch."""
    minibatches: int = reads("ppo_minibatches")
    """Minibatches per pass; > 1 makes the ratio (and so the clip) matter after the first."""


class PPO:
    """Sample B from π_old; r̃ = R − β log(π_old/π_ref) (paper eq. 1); A = r̃ − V with a learned baseline
    V (one prompt, so the value model is one scalar per trial, fitted to r̃ by squared error with its
    own Adam); clipped surrogate (Schulman et al. 2017, eq. 7) over `minibatches` × `epochs`."""

    def __init__(self, s: PPOSettings, run: Run):
        self.s, self.run = s, run
        self.value = torch.zeros(len(run.seeds), requires_grad=True)
        # the value baseline's own Adam moments in the policy's optimiser: one fused step for both
        run.opt.add([self.value])
        self.noise = NoiseStream(run.seeds, "align/sample", (run.batch_size, 3))

    def step(self) -> None:
        run, value = self.run, self.value
        x = model.sample(run.policy, self.noise.next())
        feats = model.features(x)
        with torch.no_grad():
            logp_old = model.log_prob_of(model.coefficients(run.policy), feats)
            shaped = kl_shaped_reward(run.reward(x), logp_old, model.log_prob_of(run.ref_coef, feats), run.beta)
        mb = run.batch_size // self.s.minibatches
        for _ in range(self.s.epochs):
            for i in range(0, run.batch_size, mb):
                sl = slice(i, i + mb)
                adv = shaped[:, sl] - value.detach()[:, None]
                logp_new = model.log_prob_of(model.coefficients(run.policy), feats[:, sl])
                loss = ppo_clipped_loss(logp_new, logp_old[:, sl], adv, self.s.clip).mean(-1).sum()
                v_loss = value_loss(value[:, None], shaped[:, sl]).mean(-1).sum()
                step(run.opt, loss + v_loss)


# ----------------------------------------------------------------------------------------- GRPO

GRPO_KL_FORMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    # ∇ E_{π_θ}[term] = ∇ KL(π_θ ‖ π_ref): the reverse KL the paper's §3.4 says GRPO keeps as its anchor
    "reverse": kl_reverse_surrogate,
    # β·k3 as a loss term (GRPO eq. 3, TRL's GRPOTrainer): on-policy its gradient is ∇ KL(π_ref ‖ π_θ)
    "k3": kl_k3,
}
"""GRPO's KL term by name: (log π_θ(x), log π_ref(x)) → per-sample loss term, x ~ π_θ (objectives.rl)."""


@dataclass(frozen=True)
class GRPOSettings:
    std_normalize: bool = reads("grpo_std_normalize")
    """Divide the advantage by the batch reward std."""
    kl: str = reads("grpo_kl")
    """Which KL the β-weighted term's expected gradient is, a key of GRPO_KL_FORMS: 'reverse'
    KL(π_θ‖π_ref) (the paper's §3.4 reading; default) or 'k3' (the k3 estimator as a loss, whose
    on-policy gradient is that of the forward KL(π_ref‖π_θ); GRPO paper, TRL default)."""

    def __post_init__(self) -> None:
        if self.kl not in GRPO_KL_FORMS:
            raise ValueError(f"grpo_kl {self.kl!r} is not one of {', '.join(GRPO_KL_FORMS)}")


class GRPO:
    """Sample B from π_θ; A = R − mean(R) (÷ std if asked; Shao et al. 2024); loss −A·log π_θ + β·KL term,
    the KL term one of GRPO_KL_FORMS."""

    def __init__(self, s: GRPOSettings, run: Run):
        self.s, self.run = s, run
        self.noise = NoiseStream(run.seeds, "align/sample", (run.batch_size, 3))

    def step(self) -> None:
        run = self.run
        x = model.sample(run.policy, self.noise.next())
        feats = model.features(x)
        with torch.no_grad():
            adv = grpo_advantage(run.reward(x), self.s.std_normalize)
            logp_ref = model.log_prob_of(run.ref_coef, feats)
        logp = model.log_prob_of(model.coefficients(run.policy), feats)
        kl = GRPO_KL_FORMS[self.s.kl](logp, logp_ref)
        step(run.opt, (-(adv * logp) + run.beta * kl).mean(-1).sum())


# ------------------------------------------------------------------------------ preference pairs

PairLoss = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
"""loss(log π_θ(y_w), log π_θ(y_l), log π_ref(y_w), log π_ref(y_l), β), per pair (objectives.dpo)."""


@dataclass(frozen=True)
class OnlineSettings:
    """On-policy pairs have nothing of their own to set: β, lr and batch size are every aligner's."""


@dataclass(frozen=True)
class OfflineSettings:
    pairs: int = reads("dpo_offline_pairs")
    """Size of the static preference set drawn once from π_ref."""


class OnlinePairs:
    """Each step: 2B fresh points from π_θ, first half against second half, the higher reward wins
    (ties to the first; paper appendix A.2 "preference generation"); `loss` on the B pairs."""

    def __init__(self, loss: PairLoss, s: OnlineSettings, run: Run):
        self.loss, self.run = loss, run
        self.noise = NoiseStream(run.seeds, "align/sample", (2 * run.batch_size, 3))

    def step(self) -> None:
        run, B = self.run, self.run.batch_size
        x = model.sample(run.policy, self.noise.next())
        w, l = label_pairs(x[:, :B], x[:, B:], run.reward)
        fw, fl = model.features(w), model.features(l)
        with torch.no_grad():
            ref_w, ref_l = model.log_prob_of(run.ref_coef, fw), model.log_prob_of(run.ref_coef, fl)
        loss = self.loss(_policy_log_prob(run, fw), _policy_log_prob(run, fl), ref_w, ref_l, run.beta)
        step(run.opt, loss.mean(-1).sum())


class OfflinePairs:
    """One static set of `pairs` pairs drawn from π_ref and labelled by the oracle at the start; each
    step resamples B of them (with replacement) for `loss`."""

    def __init__(self, loss: PairLoss, s: OfflineSettings, run: Run):
        self.loss, self.run, self.n = loss, run, s.pairs
        pool = model.sample(run.ref, once(run.seeds, "align/offline_pairs", (2 * s.pairs, 3)))
        w, l = label_pairs(pool[:, :s.pairs], pool[:, s.pairs:], run.reward)
        self.ref_w, self.ref_l = model.log_prob(run.ref, w), model.log_prob(run.ref, l)
        self.fw, self.fl = model.features(w), model.features(l)  # what each step gathers: its pairs' features
        self.noise = NoiseStream(run.seeds, "align/offline_batches", (run.batch_size,))

    def step(self) -> None:
        run = self.run
        idx = (normal_to_uniform(self.noise.next()) * self.n).long().clamp_max(self.n - 1)
        fw, fl = _gather(self.fw, idx), _gather(self.fl, idx)
        ref_w, ref_l = torch.gather(self.ref_w, 1, idx), torch.gather(self.ref_l, 1, idx)
        loss = self.loss(_policy_log_prob(run, fw), _policy_log_prob(run, fl), ref_w, ref_l, run.beta)
        step(run.opt, loss.mean(-1).sum())


def label_pairs(a: Tensor, b: Tensor, reward: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Winner/loser by the oracle reward (ties go to the first element)."""
    a_wins = (reward(a) >= reward(b))[..., None]
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def _policy_log_prob(run: Run, feats: Tensor) -> Tensor:
    # the policy's coefficients once per branch, not shared by the winner's and the loser's: sharing
    # them would sum the two branches' gradients in another order and change the last bits of the run
    return model.log_prob_of(model.coefficients(run.policy), feats)


def _gather(points: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(points, 1, idx[..., None].expand(-1, -1, points.shape[-1]))


# ---------------------------------------------------------------------------------------- table

@dataclass(frozen=True)
class Aligner:
    """One entry of ALIGNERS."""

    settings: type
    """The settings slice this aligner reads (a frozen dataclass; `slices.slice_of` fills it)."""
    start: Callable[[Any, Run], Update]
    """(settings slice, run) -> its state and per-step update."""
    samples: str
    """What it samples each step (for docs and listings)."""


ALIGNERS: dict[str, Aligner] = {
    "ppo": Aligner(PPOSettings, PPO, "B points from π_old"),
    "grpo": Aligner(GRPOSettings, GRPO, "B points from π_θ"),
    "dpo_online": Aligner(OnlineSettings, partial(OnlinePairs, dpo_loss), "2B points from π_θ, paired"),
    "dpo_offline": Aligner(OfflineSettings, partial(OfflinePairs, dpo_loss), "B pairs of a static π_ref set"),
    # IPO (Azar et al. 2023, eq. 17): DPO's pairs, the squared loss (h − 1/(2β))².
    "ipo_online": Aligner(OnlineSettings, partial(OnlinePairs, ipo_loss), "2B points from π_θ, paired"),
    "ipo_offline": Aligner(OfflineSettings, partial(OfflinePairs, ipo_loss), "B pairs of a static π_ref set"),
}


# --------------------------------------------------------------------------------------- the loop

@dataclass(frozen=True)
class AlignSettings:
    """The alignment stage's settings slice: what every aligner shares, plus its own (`method`)."""

    algorithm: str
    """A key of ALIGNERS."""
    method: Any
    """That aligner's own settings slice."""
    lr: float
    """Adam learning rate of the policy."""
    batch_size: int
    """Samples (or pairs) per step."""
    eval_every: int
    """Learning-curve interval in steps (0: none)."""
    geometry: Geometry = field(default_factory=Geometry)
    """Where the oracle reward is."""

    @classmethod
    def of(cls, cfg) -> "AlignSettings":
        return cls(algorithm=cfg.algorithm, method=slice_of(ALIGNERS[cfg.algorithm].settings, cfg), lr=cfg.lr,
                   batch_size=cfg.batch_size, eval_every=cfg.eval_every, geometry=Geometry.of(cfg))


def align(reference: model.Params, seeds, beta: Tensor, iterations, settings: AlignSettings, *,
          on_eval: Callable[[model.Params, int], None] | None = None,
          progress: Progress = None) -> dict[int, model.Params]:
    """Align a policy started at π_ref = `reference` against the oracle reward; return snapshots.

    One run of max(iterations) steps; the policy after each count in `iterations` is returned, and
    `on_eval(policy, step)` is called at step 0 and every `settings.eval_every` steps for learning
    curves. `beta` [T] is each trial's KL coefficient.
    """
    wanted = sorted(set(int(i) for i in iterations))
    policy = model.trainable(reference)
    opt = adam(policy.values(), settings.lr)
    ref = model.detach(reference)
    run = Run(policy=policy, ref=ref, ref_coef=model.coefficients(ref), opt=opt, seeds=list(seeds),
              beta=beta.reshape(len(seeds), 1), reward=truth.Reward(settings.geometry),
              batch_size=settings.batch_size)
    update = ALIGNERS[settings.algorithm].start(settings.method, run)
    curve = on_eval if settings.eval_every else None

    snapshots: dict[int, model.Params] = {}
    if curve:
        curve(model.detach(policy), 0)
    for it in range(1, wanted[-1] + 1):
        update.step()
        if it in wanted:
            check_finite(policy, f"align/{settings.algorithm}")
            snapshots[it] = model.detach(policy)
        if curve and it % settings.eval_every == 0:
            curve(model.detach(policy), it)
        if progress:
            progress(1)
    return snapshots
