"""One trial, start to finish, without Ray: run the world, turn its result (or its exception) into rows,
and write them to the results store. Ray Tune calls this inside a trial; a test can call it directly.
"""
from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import dataclass

import pyarrow as pa

from adk_ray.service.plan import trial_id_of
from adk_ray.service.rows import TrialMeta, error_table, models_table, ok_table
from adk_ray.service.store import ResultStore
from adk_ray.service.worlds import TrialConfig, World

MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its config; small and picklable, sent to every Ray worker."""

    storage: str
    """Storage location (absolute local path or URI); results go to <storage>/<sweep>/."""
    meta: TrialMeta
    """Sweep name, code version and world (which runs the trial and is stamped on its rows)."""


def cache_dir_for(store: ResultStore, world: World) -> str:
    """The world's shared-stage cache (`World.cache`), relative to the storage: under it when it is local
    or when the world keeps its cache on shared storage (`World.cache_on_storage`, any node reads what
    another wrote); else under a node-local temp dir."""
    relative = world.cache.format(sweep=store.sweep)
    if store.is_local:
        return os.path.join(os.path.dirname(store.root), relative)
    if world.cache_on_storage:
        return f"{store.storage.rstrip('/')}/{relative}"
    return os.path.join(tempfile.gettempdir(), "adk_ray_cache", relative)


def run_and_store(cfg: TrialConfig, ctx: TrialContext) -> pa.Table:
    """Run one trial and write its files; never raises for a failure of the world (it becomes error rows)."""
    store = ResultStore(ctx.storage, ctx.meta.sweep)
    start = time.monotonic()
    try:
        result = ctx.meta.world.run(cfg, cache_dir_for(store, ctx.meta.world))
        wall = time.monotonic() - start
        data = ok_table(result.rows, cfg, ctx.meta, wall)
        models = models_table(result.models, cfg, ctx.meta) if result.models else None
        samples = models_table(result.samples, cfg, ctx.meta) if result.samples else None
    except Exception as e:  # noqa: BLE001 - any failure of the world is the trial's result
        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS]
        data, models, samples = error_table(cfg, ctx.meta, message, time.monotonic() - start), None, None
    store.write_trial(trial_id_of(cfg), data, models, samples)
    return data
