"""Student training: sequence-level KD / SFT on a teacher's samples (appendix C.2).

Causal-LM loss on every token after the first (pad positions masked), AdamW (lr 5e-4, betas 0.9/0.95),
Warmup-Stable-Decay schedule (1 % linear warmup, 20 % linear decay), per-device batch 64.

The pieces are pure and Ray-free: `train_loop` runs steps [start, total) on an engine of `engine.py`, the
one interface every fine-tuning stage of this world uses, over `CausalLMLoss(model)` with `engine_kwargs`:
`TorchEngine` in one process (the local backend), `DeepSpeedModuleEngine` (ZeRO stage 2 by default) in
the Ray Train workers of `adk_ray.service.llm_train` (one per GPU, or per CPU process over gloo).

Data order is a function of (seed, step, shuffle_window) only: step s of a run reads the same rows whether
the run went straight through or resumed from a checkpoint at step k < s, and whatever the number of
workers. Training streams its token set (`student_batches`): memory follows the shuffle window and the
batch, never the set's size.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from adk_ray.worlds.llm.data import TokenSet, pad_batch
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
    """Row indices rank `rank` trains on at `step` when the whole set is one shuffle window (n ≤
    shuffle_window), the in-memory order training used before it streamed: epoch e = step //
    steps_per_epoch shuffles the set with a generator seeded by (seed, e); the step's global batch is the
    next slice (wrapping at the end). `epoch_batches` reproduces it exactly for such sets; kept as the
    reference the streaming order is tested against."""
    g = per_device * world_size
    spe = steps_per_epoch(n, g)
    epoch, within = divmod(step, spe)
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    idx = (within * g + np.arange(rank * per_device, (rank + 1) * per_device)) % n
    return perm[idx]


def window_rng(seed: int, epoch: int, window_index: int, n: int, window: int) -> np.random.Generator:
    """The generator that permutes window `window_index` of an epoch: seeded by (seed, epoch) when it is
    the set's only window (w == 0 and n ≤ window), so a set that fits one window is shuffled exactly as
    `batch_rows` shuffled the whole set in memory (same results as before streaming); by (seed, epoch, w)
    otherwise, so windows of one epoch, and epochs, draw independent permutations."""
    if window_index == 0 and n <= window:
        return np.random.default_rng([int(seed), int(epoch)])
    return np.random.default_rng([int(seed), int(epoch), int(window_index)])


def _windows(tables: Iterable[pa.Table], window: int) -> Iterator[pa.Table]:
    """The stream re-cut into consecutive tables of exactly `window` rows (the last one shorter), whatever
    the input's table boundaries (a Parquet part, a Ray Data batch): the order must depend on the rows
    only, not on how a reader happened to chunk them. Holds at most window + one input table.

    When the input has `chunk` and `row` columns they must increase strictly along the stream ((chunk,
    row) order, which both readers promise): a reader that reordered rows would silently change which
    rows a step trains on, so it fails here instead. Only `tokens` is kept past this point."""
    held: list[pa.Table] = []
    count, last = 0, -1
    for table in tables:
        if "chunk" in table.column_names and "row" in table.column_names and len(table):
            key = (table.column("chunk").to_numpy().astype(np.int64) << 32) | table.column("row").to_numpy()
            if key[0] <= last or (len(key) > 1 and np.any(np.diff(key) <= 0)):
                raise ValueError("token stream is not in strictly increasing (chunk, row) order")
            last = int(key[-1])
        table = table.select(["tokens"])
        while len(table):
            take = min(window - count, len(table))
            held.append(table.slice(0, take))
            count += take
            table = table.slice(take)
            if count == window:
                yield pa.concat_tables(held).combine_chunks()
                held, count = [], 0
    if count:
        yield pa.concat_tables(held).combine_chunks()


def epoch_batches(tables: Iterable[pa.Table], n: int, global_batch: int, seed: int, epoch: int,
                  window: int) -> Iterator[pa.Table]:
    """The global batches of epoch `epoch`, in step order, from a stream of Arrow tables (column `tokens`;
    `chunk`, `row` checked if present) holding the set's n rows in (chunk, row) order.

    The stream is cut into consecutive windows of `window` rows; window w is permuted by
    `window_rng(seed, epoch, w, n, window)`; global batches of g = `global_batch` rows are cut from the
    concatenation of the permuted windows (a batch may span two windows). When g does not divide n, the
    last batch is completed with the epoch's first rows (cyclically if g > n), as `% n` did in
    `batch_rows`: every epoch has steps_per_epoch(n, g) = ceil(n / g) full batches. For n ≤ window this is
    exactly `batch_rows`' order.

    Why windows: a global shuffle needs the whole set in memory; a windowed one holds one window (plus
    the batch being cut, plus the epoch's first batch when the last one wraps), so memory is bounded by
    window + O(g) rows whatever n is, and batches still mix rows from many sampling chunks."""
    if n <= 0:
        raise ValueError("an empty token set has no batches")
    g = int(global_batch)
    wraps = n % g != 0
    first: pa.Table | None = None           # the epoch's first global batch, kept only for the wrap
    pending: list[pa.Table] = []
    pending_rows, seen = 0, 0
    for w, win in enumerate(_windows(tables, window)):
        seen += len(win)
        if seen > n:
            raise ValueError(f"token stream has more than the {n} rows it was announced with")
        perm = window_rng(seed, epoch, w, n, window).permutation(len(win))
        pos = 0
        while pos < len(perm):
            idx = perm[pos:pos + g - pending_rows]
            pos += len(idx)
            pending.append(win.take(idx))
            pending_rows += len(idx)
            if pending_rows == g:
                batch = pa.concat_tables(pending).combine_chunks()
                pending, pending_rows = [], 0
                if wraps and first is None:
                    first = batch
                yield batch
        del win
    if seen != n:
        raise ValueError(f"token stream has {seen} rows, expected {n}")
    if pending_rows:
        tail = pa.concat_tables(pending).combine_chunks()
        head = first if first is not None else tail       # g > n: the epoch's rows are all in the tail
        yield pa.concat_tables([tail, head.take(np.arange(g - pending_rows) % len(head))]).combine_chunks()


def student_batches(read_epoch: Callable[[], Iterable[pa.Table]], n: int, per_device: int, world_size: int,
                    rank: int, seed: int, window: int, start_step: int, total: int, pad_id: int,
                    width: int) -> Iterator[TokenSet]:
    """This rank's padded batches for steps start_step … total−1: rows [rank·pd, (rank+1)·pd) of each
    global batch of `epoch_batches` (pd = per_device), right-padded to `width` by `data.pad_batch`.

    `read_epoch()` opens the set's stream afresh for each epoch (`data.iter_parts(dir)` locally, a Ray
    Data iterator in Ray Train workers). Every rank reads the whole stream and keeps its own slice, so the
    order depends on (seed, step, window, global batch) only: the same for any number of workers and for
    the local backend standing in for them. A run resumed at step k reads the first k mod spe batches of
    epoch k // spe without training on them (nor padding them): their rows are needed to reach the
    window positions of the next batch."""
    g = per_device * world_size
    spe = steps_per_epoch(n, g)
    step = start_step
    while step < total:
        epoch, within = divmod(step, spe)
        # Each epoch's stream is read to its end, also past the last step: its row count is checked there,
        # and a reader (a Ray Data iterator) is not left half-consumed.
        for i, batch in enumerate(epoch_batches(read_epoch(), n, g, seed, epoch, window)):
            if i >= within and step < total:
                yield pad_batch(batch.slice(rank * per_device, per_device), pad_id, width)
                step += 1


def make_batch(batch: TokenSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) [B, L] of a padded batch; labels are IGNORE past each sequence's end."""
    ids = torch.from_numpy(batch.tokens.astype(np.int64))
    lengths = torch.from_numpy(batch.lengths.astype(np.int64))
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


def train_loop(engine, batches: Iterable[TokenSet], start_step: int, total: int,
               on_step: Callable[[int, torch.Tensor, float], None] | None = None) -> float:
    """Optimiser steps start_step … total−1, one per batch of `batches` (this rank's, in step order:
    `student_batches`); on_step(steps_done, loss, lr) after each (loss stays a device tensor, so a callback
    that logs rarely costs no host sync). Returns the last loss."""
    loss = torch.tensor(float("nan"))
    step = start_step
    for batch in batches:
        if step >= total:
            break
        ids, labels = make_batch(batch)
        lr = engine.lr()
        loss = train_step(engine, ids.to(engine.device, non_blocking=True), labels.to(engine.device, non_blocking=True))
        step += 1
        if on_step:
            on_step(step, loss, lr)
    if step != total:
        raise RuntimeError(f"the batch stream ended at step {step} of {total}")
    return float(loss)
