"""The MoG world's stages: SFT of p', KD of p'', alignment (PPO, GRPO, DPO on/off-policy), metrics.

Each stage is a pure function of (its settings, its input models, its seeds) and is batched over a
leading trial axis T: `seeds[t]` drives every draw of trial t. Losses are summed over trials of
per-trial means, so each trial's gradient — and, Adam being elementwise, its whole trajectory — is
the one it would have alone.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from adk_ray.columns import METRICS  # noqa: F401 - the keys `evaluate` returns
from adk_ray.objectives.dpo import dpo_loss
from adk_ray.objectives.kd import kd_reweight_logits
from adk_ray.objectives.rl import grpo_advantage, kl_k3, kl_shaped_reward, ppo_clipped_loss, value_loss
from adk_ray.worlds.mog import model, truth
from adk_ray.worlds.mog.noise import NoiseStream, normal_to_uniform, once

INIT_SCALE = 0.5  # initial per-axis std of every fitted component: broad enough to see its neighbours
Progress = Callable[[int], None] | None


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam (the paper's optimiser for every stage), fused: on these tiny tensors the default
    per-parameter loop costs more than the forward and backward passes together (~6× slower step)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def fit_to_samples(teacher: model.Params, teacher_logits: Tensor, n_components: int, seeds, iterations: int,
                   lr: float, batch_size: int, stream: str, progress: Progress = None) -> model.Params:
    """Maximum-likelihood fit of a K-component MoG to fresh samples of a teacher, one batch per step.

    Serves SFT (teacher p*, its own weights) and sequence-level KD (teacher p', weights sharpened
    by β_KD). The student starts on K teacher samples (see `model.init_from_samples`).
    """
    T = len(seeds)
    init_points = model.sample(teacher, once(seeds, f"{stream}/init", (n_components, 3)), teacher_logits)
    student = model.trainable(model.init_from_samples(init_points, INIT_SCALE))
    opt = adam(student.values(), lr)
    data = NoiseStream(seeds, f"{stream}/data", (batch_size, 3))
    for step in range(iterations):
        x = model.sample(teacher, data.next(), teacher_logits)
        loss = -model.log_prob(student, x).mean(-1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress(1)
    _check_finite(student, stream)
    return model.detach(student)


def sft(seeds, n_components: int, iterations: int, lr: float, batch_size: int, progress: Progress = None) -> model.Params:
    """p': a K=6 MoG fitted by maximum likelihood to samples of p* (paper appendix A.1)."""
    p_star = truth.ground_truth(len(seeds))
    return fit_to_samples(p_star, p_star["logits"], n_components, seeds, iterations, lr, batch_size, "sft", progress)


def distill(teacher: model.Params, kd_beta: Tensor, seeds, n_components: int, iterations: int, lr: float,
            batch_size: int, progress: Progress = None) -> model.Params:
    """p'': a K=4 or 3 MoG fitted to samples of the teacher with weights softmax(β_KD log α') (eq. 7).

    The same function makes p'' from p' and the final A-K model p''_AK from p'_AK (appendix A.2).
    """
    logits = kd_reweight_logits(teacher["logits"], kd_beta)
    return fit_to_samples(teacher, logits, n_components, seeds, iterations, lr, batch_size, "kd", progress)


def align(policy: model.Params, reference: model.Params, seeds, beta: Tensor, algorithm: str, iterations: list[int],
          target: str, lr: float, batch_size: int, reward_scale: float = 10.0, reward_alpha: float = 2.0,
          ppo_clip: float = 0.2, ppo_epochs: int = 1, ppo_minibatches: int = 4, grpo_std_normalize: bool = False,
          dpo_offline_pairs: int = 2560, eval_every: int = 0,
          evaluate_fn: Callable[[model.Params, int], None] | None = None,
          progress: Progress = None) -> dict[int, model.Params]:
    """Align `policy` (initialised at π_ref = `reference`) against the oracle reward; return snapshots.

    One run of max(iterations) steps; the policy after each count in `iterations` is returned, and
    `evaluate_fn(policy, step)` is called every `eval_every` steps for learning curves. `beta` [T]
    is each trial's KL coefficient. Algorithms (paper appendix A.2):
      ppo         sample B from π_old; r̃ = R − β log(π_old/π_ref); A = r̃ − V with a learned baseline V
                  (one prompt, so the value model is one scalar per trial); clipped surrogate over
                  `ppo_minibatches` minibatches × `ppo_epochs`, V fitted to r̃ by squared error.
      grpo        sample B from π_θ; A = R − mean(R) (÷ std if asked); loss −A·log π_θ + β·k3 KL.
      dpo_online  sample 2B from π_θ, pair them, the higher reward wins; DPO loss with β.
      dpo_offline one static set of pairs drawn from π_ref at step 0; B pairs resampled per step.
    """
    T = len(seeds)
    wanted = sorted(set(int(i) for i in iterations))
    policy = model.trainable(policy)
    ref = model.detach(reference)
    opt = adam(policy.values(), lr)
    b = beta.reshape(T, 1)

    def reward(x: Tensor) -> Tensor:
        return truth.reward(x, target, reward_scale, reward_alpha)

    if algorithm == "ppo":
        value = torch.zeros(T, requires_grad=True)
        value_opt = adam([value], lr)
        noise = NoiseStream(seeds, "align/sample", (batch_size, 3))
    elif algorithm == "grpo":
        noise = NoiseStream(seeds, "align/sample", (batch_size, 3))
    elif algorithm == "dpo_online":
        noise = NoiseStream(seeds, "align/sample", (2 * batch_size, 3))
    elif algorithm == "dpo_offline":
        pool = model.sample(ref, once(seeds, "align/offline_pairs", (2 * dpo_offline_pairs, 3)))
        pool_w, pool_l = _label_pairs(pool[:, :dpo_offline_pairs], pool[:, dpo_offline_pairs:], reward)
        pool_ref_w, pool_ref_l = model.log_prob(ref, pool_w), model.log_prob(ref, pool_l)
        noise = NoiseStream(seeds, "align/offline_batches", (batch_size,))
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: ppo, grpo, dpo_online, dpo_offline")

    snapshots: dict[int, model.Params] = {}
    if evaluate_fn and eval_every:
        evaluate_fn(model.detach(policy), 0)
    for step in range(1, wanted[-1] + 1):
        if algorithm == "ppo":
            x = model.sample(policy, noise.next())
            with torch.no_grad():
                logp_old = model.log_prob(policy, x)
                shaped = kl_shaped_reward(reward(x), logp_old, model.log_prob(ref, x), b)
            mb = batch_size // ppo_minibatches
            for _ in range(ppo_epochs):
                for i in range(0, batch_size, mb):
                    sl = slice(i, i + mb)
                    adv = shaped[:, sl] - value.detach()[:, None]
                    logp_new = model.log_prob(policy, x[:, sl])
                    loss = ppo_clipped_loss(logp_new, logp_old[:, sl], adv, ppo_clip).mean(-1).sum()
                    v_loss = value_loss(value[:, None], shaped[:, sl]).mean(-1).sum()
                    opt.zero_grad(set_to_none=True)
                    value_opt.zero_grad(set_to_none=True)
                    (loss + v_loss).backward()
                    opt.step()
                    value_opt.step()
        elif algorithm == "grpo":
            x = model.sample(policy, noise.next())
            with torch.no_grad():
                adv = grpo_advantage(reward(x), grpo_std_normalize)
                logp_ref = model.log_prob(ref, x)
            logp = model.log_prob(policy, x)
            loss = (-(adv * logp) + b * kl_k3(logp, logp_ref)).mean(-1).sum()
            _step(opt, loss)
        elif algorithm == "dpo_online":
            x = model.sample(policy, noise.next())
            w, l = _label_pairs(x[:, :batch_size], x[:, batch_size:], reward)
            with torch.no_grad():
                ref_w, ref_l = model.log_prob(ref, w), model.log_prob(ref, l)
            loss = dpo_loss(model.log_prob(policy, w), model.log_prob(policy, l), ref_w, ref_l, b).mean(-1).sum()
            _step(opt, loss)
        else:  # dpo_offline
            idx = (normal_to_uniform(noise.next()) * dpo_offline_pairs).long().clamp_max(dpo_offline_pairs - 1)
            w, l = _gather(pool_w, idx), _gather(pool_l, idx)
            ref_w, ref_l = torch.gather(pool_ref_w, 1, idx), torch.gather(pool_ref_l, 1, idx)
            loss = dpo_loss(model.log_prob(policy, w), model.log_prob(policy, l), ref_w, ref_l, b).mean(-1).sum()
            _step(opt, loss)

        if step in wanted:
            _check_finite(policy, f"align/{algorithm}")
            snapshots[step] = model.detach(policy)
        if evaluate_fn and eval_every and step % eval_every == 0:
            evaluate_fn(model.detach(policy), step)
        if progress:
            progress(1)
    return snapshots


def _step(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _label_pairs(a: Tensor, b: Tensor, reward: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Winner/loser by the oracle reward (ties go to the first element)."""
    a_wins = (reward(a) >= reward(b))[..., None]
    return torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def _gather(points: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(points, 1, idx[..., None].expand(-1, -1, points.shape[-1]))


def _check_finite(params: model.Params, where: str) -> None:
    for name, v in params.items():
        # −inf logits are components of weight 0 (see model.pad_components), not a divergence
        ok = torch.isfinite(v) | (v == -torch.inf) if name == "logits" else torch.isfinite(v)
        if not ok.all():
            bad = (~ok).reshape(v.shape[0], -1).any(-1).nonzero().flatten().tolist()
            raise FloatingPointError(f"non-finite {name} after {where} in trial(s) {bad}")


@torch.no_grad()
def evaluate(q: model.Params, seeds, target: str, n_samples: int, reward_scale: float = 10.0,
             reward_alpha: float = 2.0) -> dict[str, Tensor]:
    """The four metrics of paper eq. 5–6, each [T], by Monte Carlo with `n_samples` draws:
    Overall Precision E_{x~q}[log p*(x)], Target Precision E_{x~q}[log p_target(x)],
    Overall Recall E_{x~p*}[log q(x)], Final Average Reward E_{x~q}[R(x)]. Densities are exact.
    The same seed draws the same noise for every model evaluated, so differences between models
    are not Monte-Carlo noise.
    """
    T = len(seeds)
    p_star, p_target = truth.ground_truth(T), truth.target_distribution(target, T)
    x_q = model.sample(q, once(seeds, "eval/q", (n_samples, 3)))
    x_star = model.sample(p_star, once(seeds, "eval/p_star", (n_samples, 3)))
    return {
        "final_average_reward": truth.reward(x_q, target, reward_scale, reward_alpha).mean(-1),
        "target_precision": model.log_prob(p_target, x_q).mean(-1),
        "overall_precision": model.log_prob(p_star, x_q).mean(-1),
        "overall_recall": model.log_prob(q, x_star).mean(-1),
    }
