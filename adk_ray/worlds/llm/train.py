"""Student training: sequence-level KD / SFT on a teacher's samples (appendix C.2).

Causal-LM loss on every token after the first (pad positions masked), AdamW (lr 5e-4, betas 0.9/0.95),
Warmup-Stable-Decay schedule (1 % linear warmup, 20 % linear decay), per-device batch 64.

The pieces are pure and Ray-free: `train_loop` runs steps [start, total) on an engine of `engine.py`, the
one interface every fine-tuning stage of this world uses, over `CausalLMLoss(model)` with `engine_kwargs`:
`TorchEngine` in one process (the local backend), `DeepSpeedModuleEngine` (ZeRO stage 2 by default) in
the Ray Train workers of `adk_ray.service.llm_train` (one per GPU, or per CPU process over gloo).

Data order is a function of (seed, step) only: step s of a run reads the same rows whether the run went
straight through or resumed from a checkpoint at step k < s.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adk_ray.worlds.llm.data import TokenSet
from adk_ray.worlds.llm.presets import TrainSettings

IGNORE = -100


def wsd_multiplier(step: int, total: int, warmup_frac: float = 0.01, decay_frac: float = 0.2,
                   min_ratio: float = 0.0) -> float:
    """Warmup-Stable-Decay: the learning-rate multiplier of optimiser update `step` (0-based) of `total`.

    W = ceil(warmup_frac · total) warmup updates ramp linearly (step+1)/W; D = ceil(decay_frac · total)
    final updates decay linearly from 1 towards min_ratio, reaching min_ratio + (1 − min_ratio)/D at the
    last update (an update at lr 0 would be wasted); every update in between uses 1.
    """
    warm = math.ceil(warmup_frac * total) if warmup_frac > 0 else 0
    decay = math.ceil(decay_frac * total) if decay_frac > 0 else 0
    if step < warm:
        return (step + 1) / warm
    if decay and step >= total - decay:
        frac = (total - step) / decay                            # 1 at the first decay update, 1/D at the last
        return min_ratio + (1.0 - min_ratio) * frac
    return 1.0


def steps_per_epoch(n: int, global_batch: int) -> int:
    return max(1, math.ceil(n / global_batch))


def total_steps(n: int, global_batch: int, epochs: int) -> int:
    """Optimiser steps of a run: whole epochs of ceil(n / global batch) steps."""
    return steps_per_epoch(n, global_batch) * epochs


def batch_rows(step: int, n: int, per_device: int, world_size: int, rank: int, seed: int) -> np.ndarray:
    """Row indices rank `rank` trains on at `step`: epoch e = step // steps_per_epoch shuffles the set with
    a generator seeded by (seed, e); the step's global batch is the next slice (wrapping at the end)."""
    g = per_device * world_size
    spe = steps_per_epoch(n, g)
    epoch, within = divmod(step, spe)
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    idx = (within * g + np.arange(rank * per_device, (rank + 1) * per_device)) % n
    return perm[idx]


def make_batch(data: TokenSet, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) [B, L] for `rows`; labels are IGNORE past each sequence's end."""
    ids = torch.from_numpy(data.tokens[rows].astype(np.int64))
    lengths = torch.from_numpy(data.lengths[rows].astype(np.int64))
    labels = ids.masked_fill(torch.arange(ids.shape[1])[None, :] >= lengths[:, None], IGNORE)
    return ids, labels


class CausalLMLoss(nn.Module):
    """Wraps a causal LM so forward(input_ids, labels) is the mean next-token cross-entropy.

    'hf' uses the model's own loss; 'chunked' runs the trunk once, then lm_head + cross-entropy over
    `chunk_tokens`-token chunks under activation checkpointing, never holding [B, T, vocab] fp32 logits
    (the largest tensor of a small-model, big-vocab step).
    """

    def __init__(self, model: nn.Module, impl: str = "hf", chunk_tokens: int = 8192):
        super().__init__()
        self.model, self.impl, self.chunk_tokens = model, impl, chunk_tokens

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.impl == "hf":
            return self.model(input_ids=input_ids, labels=labels, use_cache=False).loss
        hidden = self.model.model(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1]
        target = labels[:, 1:].reshape(-1)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        total = hidden.new_zeros((), dtype=torch.float32)
        for a in range(0, target.shape[0], self.chunk_tokens):
            h, y = hidden[a:a + self.chunk_tokens], target[a:a + self.chunk_tokens]
            total = total + torch.utils.checkpoint.checkpoint(self._chunk_loss, h, y, use_reentrant=False)
        return total / (target != IGNORE).sum().clamp(min=1)

    def _chunk_loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model.lm_head(h).float(), y, ignore_index=IGNORE, reduction="sum")


def student_engine(model: nn.Module, s: TrainSettings, total: int, device=None, world_size: int | None = None):
    """The engine (`engine.py`, the interface every fine-tuning stage here uses) that trains a student over
    `total` optimiser steps: its module is `CausalLMLoss(model)`; AdamW (lr, betas, eps, weight decay),
    gradient clipping and the Warmup-Stable-Decay schedule of `s`, one micro-batch per step, bf16 on GPU,
    torch.compile when asked. `world_size` None: `TorchEngine` in this process (the local backend); else
    `DeepSpeedModuleEngine` (ZeRO stage s.zero_stage, per_device_batch per rank) in a Ray Train worker."""
    from adk_ray.worlds.llm.engine import DeepSpeedModuleEngine, TorchEngine
    kwargs = dict(lr=s.lr, betas=tuple(s.betas), eps=s.eps, weight_decay=s.weight_decay, grad_clip=s.grad_clip,
                  grad_accum=1, compile=s.compile,
                  schedule=lambda step: wsd_multiplier(step, total, s.warmup_frac, s.decay_frac, s.min_lr_ratio))
    module = CausalLMLoss(model, s.loss)
    if world_size is None:
        return TorchEngine(module, device=device or "cpu", autocast=s.bf16, **kwargs)
    return DeepSpeedModuleEngine(module, world_size=world_size, micro_batch=s.per_device_batch,
                                 zero_stage=s.zero_stage, bf16=s.bf16, device=device, **kwargs)


def train_step(engine, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One optimiser step of a student's engine (its module is `CausalLMLoss`); the loss, detached."""
    loss = engine(input_ids, labels)
    engine.backward(loss)
    engine.step()
    return loss.detach()


def train_loop(engine, data: TokenSet, s: TrainSettings, seed: int, rank: int, world_size: int, start_step: int,
               total: int, on_step: Callable[[int, torch.Tensor, float], None] | None = None) -> float:
    """Optimiser steps start_step … total−1 on this rank's rows; on_step(steps_done, loss, lr) after each
    (loss stays a device tensor, so a callback that logs rarely costs no host sync). Returns the last loss."""
    loss = torch.tensor(float("nan"))
    for step in range(start_step, total):
        rows = batch_rows(step, len(data), s.per_device_batch, world_size, rank, seed)
        ids, labels = make_batch(data, rows)
        lr = engine.lr()
        loss = train_step(engine, ids.to(engine.device, non_blocking=True), labels.to(engine.device, non_blocking=True))
        if on_step:
            on_step(step + 1, loss, lr)
    return float(loss)
