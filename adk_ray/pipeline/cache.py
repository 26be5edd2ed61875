"""A disk cache for stages many trials share (p', p'' per seed), so a sweep over 6 β values fits p' once.

Entries are keyed by a hash of exactly what determines them: the stage name, the settings it reads,
the keys of its input models and the seed. Writes are atomic (temp file + rename), and a file lock
per stage group makes concurrent trials wait for the one computing instead of computing twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable

import torch
from filelock import FileLock


def stage_key(stage: str, settings: dict, seed: int | None = None, inputs: tuple[str, ...] = ()) -> str:
    blob = json.dumps({"stage": stage, "settings": settings, "seed": seed, "inputs": list(inputs)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class StageCache:
    """Per-seed entries of batched stages. `directory=None` keeps everything in memory only."""

    def __init__(self, directory: str | None = None):
        self.directory = directory
        self.memory: dict[str, dict] = {}
        if directory:
            os.makedirs(directory, exist_ok=True)

    def get_many(self, stage: str, settings: dict, seeds: list[int], inputs: list[tuple[str, ...]],
                 compute: Callable[[list[int]], list[dict]]) -> tuple[list[dict], list[str]]:
        """Entries for each seed (with its input keys), computing only the missing ones in one batched call.

        `compute(missing_positions)` receives positions into `seeds` and returns one entry per position.
        Returns (entries, keys) aligned with `seeds`.
        """
        keys = [stage_key(stage, settings, s, inp) for s, inp in zip(seeds, inputs)]
        group = stage_key(stage, settings)
        lock = FileLock(os.path.join(self.directory, f"{group}.lock")) if self.directory else _NoLock()
        with lock:
            entries = [self._load(k) for k in keys]
            missing = [i for i, e in enumerate(entries) if e is None]
            if missing:
                for i, entry in zip(missing, compute(missing)):
                    entries[i] = entry
                    self._store(keys[i], entry)
        return entries, keys

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.pt")

    def _load(self, key: str) -> dict | None:
        if key in self.memory:
            return self.memory[key]
        if self.directory and os.path.exists(self._path(key)):
            entry = torch.load(self._path(key), weights_only=True)
            self.memory[key] = entry
            return entry
        return None

    def _store(self, key: str, entry: dict) -> None:
        self.memory[key] = entry
        if not self.directory:
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        os.close(fd)
        torch.save(entry, tmp)
        os.replace(tmp, self._path(key))


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
