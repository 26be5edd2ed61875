"""Student training: sequence-level KD / SFT on a teacher's samples (appendix C.2).

Causal-LM loss on every token after the first (pad positions masked), AdamW (lr 5e-4, betas 0.9/0.95),
Warmup-Stable-Decay schedule (1 % linear warmup, 20 % linear decay), per-device batch 64.

The pieces are pure and Ray-free: `train_loop` runs steps [start, total) against any engine with a
`train_step(input_ids, labels) -> loss` method. `PlainEngine` is a single-process torch engine (the local
backend); `DeepSpeedEngine` wraps `deepspeed.initialize` with ZeRO (stage 2 by default) and is what the
Ray Train workers of `adk_ray.service.llm_train` run (one per GPU, or per CPU process over gloo).

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
from adk_ray.worlds.llm.engine import deepspeed_config
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


def make_optimizer(params, s: TrainSettings, fused: bool = False) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=s.lr, betas=tuple(s.betas), eps=s.eps, weight_decay=s.weight_decay,
                             fused=fused)


def make_scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings, total: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: wsd_multiplier(step, total, s.warmup_frac, s.decay_frac, s.min_lr_ratio))


class PlainEngine:
    """Single-process torch training: AdamW + WSD, bf16 autocast on GPU, gradient clipping."""

    def __init__(self, model: nn.Module, s: TrainSettings, total: int, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.module = CausalLMLoss(model.to(self.device).train(), s.loss)
        self.step_fn = torch.compile(self.module) if s.compile else self.module
        cuda = self.device.type == "cuda"
        self.optimizer = make_optimizer(self.module.parameters(), s, fused=cuda)
        self.scheduler = make_scheduler(self.optimizer, s, total)
        self.autocast = cuda and s.bf16
        self.clip = s.grad_clip

    def train_step(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.step_fn(input_ids, labels)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    @property
    def model(self) -> nn.Module:
        return self.module.model


class DeepSpeedEngine:
    """A DeepSpeed engine over CausalLMLoss(model) with torch AdamW (fused on GPU) and the WSD schedule.

    Expects torch.distributed to be initialised already (Ray Train does it: NCCL on GPU, gloo on CPU);
    DeepSpeed then reuses that process group, and its CPU accelerator falls back to gloo without oneCCL.
    """

    def __init__(self, model: nn.Module, s: TrainSettings, total: int, world_size: int,
                 device: str | torch.device | None = None):
        import deepspeed
        on_gpu = torch.cuda.is_available()
        if on_gpu and device is not None:
            torch.cuda.set_device(device)
        wrapper = CausalLMLoss(model, s.loss)
        if s.compile:
            wrapper.compile()
        optimizer = make_optimizer(wrapper.parameters(), s, fused=on_gpu)
        self.engine, *_ = deepspeed.initialize(
            model=wrapper, optimizer=optimizer,
            config=deepspeed_config(s.per_device_batch, 1, world_size, s.zero_stage, s.bf16, s.grad_clip, on_gpu),
            lr_scheduler=lambda opt: make_scheduler(opt, s, total), dist_init_required=False)
        self.device = self.engine.device

    def train_step(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.engine(input_ids.to(self.device), labels.to(self.device))
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach()

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    @property
    def model(self) -> nn.Module:
        return self.engine.module.model

    def save(self, directory: str, step: int) -> None:
        """Model, optimizer partitions (one file per rank), scheduler and the step, under tag 'state'."""
        self.engine.save_checkpoint(directory, tag="state", client_state={"step": step})

    def load(self, directory: str) -> int:
        """Restore everything `save` wrote; returns the step it was saved at."""
        _, client = self.engine.load_checkpoint(directory, tag="state", load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        return int(client["step"])


def train_loop(engine, data: TokenSet, s: TrainSettings, seed: int, rank: int, world_size: int, start_step: int,
               total: int, on_step: Callable[[int, torch.Tensor, float], None] | None = None) -> float:
    """Optimiser steps start_step … total−1 on this rank's rows; on_step(steps_done, loss, lr) after each
    (loss stays a device tensor, so a callback that logs rarely costs no host sync). Returns the last loss."""
    loss = torch.tensor(float("nan"))
    for step in range(start_step, total):
        rows = batch_rows(step, len(data), s.per_device_batch, world_size, rank, seed)
        ids, labels = make_batch(data, rows)
        lr = engine.lr()
        loss = engine.train_step(ids.to(engine.device, non_blocking=True), labels.to(engine.device, non_blocking=True))
        if on_step:
            on_step(step + 1, loss, lr)
    return float(loss)
