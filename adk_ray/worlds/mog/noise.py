"""Per-trial random draws that do not depend on how trials are batched.

Written by hand because torch has no batched generator with one seed per row: one
`torch.Generator` per trial, seeded from (seed, stream name), refilled in fixed chunks of steps.
Since the chunk size is fixed and draws are consumed step by step, step t of a seed sees the same
numbers whether that seed runs alone or beside others, and whether the run is 300 or 3000 steps
long — which is what lets one run be snapshotted at every iteration count of a sweep.
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

CHUNK = 64  # steps drawn per refill; part of the stream's definition, so never change it casually


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit generator seed from (trial seed, stream name), stable across runs and machines."""
    digest = hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class NoiseStream:
    """Standard normal draws of shape `shape` per trial per step: `next()` → [T, *shape]."""

    def __init__(self, seeds, stream: str, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        # Trials that share a seed share the stream (common random numbers across a β grid).
        self.unique = sorted(set(int(s) for s in seeds))
        self.index = torch.tensor([self.unique.index(int(s)) for s in seeds])
        self.gens = [torch.Generator().manual_seed(stream_seed(s, stream)) for s in self.unique]
        self.identity = [int(s) for s in seeds] == self.unique  # distinct seeds in order: nothing to gather
        self.buffer: Tensor | None = None
        self.pos = CHUNK

    def next(self) -> Tensor:
        if self.pos == CHUNK:
            # steps first, so each step's draws are one contiguous [U, *shape] block
            self.buffer = torch.stack([torch.randn((CHUNK, *self.shape), generator=g) for g in self.gens], 1)
            self.pos = 0
        out = self.buffer[self.pos]
        self.pos += 1
        return out if self.identity else out[self.index]


def once(seeds, stream: str, shape: tuple[int, ...]) -> Tensor:
    """One draw [T, *shape] of a stream used a single time (initialisation, static data sets, evaluation)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(stream_seed(s, stream)))
                        for s in seeds])


def normal_to_uniform(z: Tensor) -> Tensor:
    """Φ(z): a standard normal draw as a uniform one, so a single stream serves both needs."""
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
