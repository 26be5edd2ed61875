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
from adk_ray.worlds.mog.config import MoGTrialConfig

MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its config; small and picklable, sent to every Ray worker."""

    storage: str
    """Storage location (absolute local path or URI); results go to <storage>/<sweep>/."""
    meta: TrialMeta
    """Sweep name, code version and world stamped on the rows."""


def cache_dir_for(store: ResultStore) -> str:
    """The world's shared-stage cache: next to the results when local, else a node-local temp dir."""
    if store.is_local:
        return store.path("cache")
    return os.path.join(tempfile.gettempdir(), "adk_ray_cache", store.sweep)


def run_and_store(cfg: MoGTrialConfig, ctx: TrialContext) -> pa.Table:
    """Run one trial and write its files; never raises for a failure of the world (it becomes error rows)."""
    from adk_ray.pipeline.mog import run_trial  # the world: imported where it runs

    store = ResultStore(ctx.storage, ctx.meta.sweep)
    start = time.monotonic()
    try:
        result = run_trial(cfg, cache_dir=cache_dir_for(store))
        wall = time.monotonic() - start
        data, models = ok_table(result.rows, cfg, ctx.meta, wall), models_table(result.models, cfg, ctx.meta)
    except Exception as e:  # noqa: BLE001 - any failure of the world is the trial's result
        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS]
        data, models = error_table(cfg, ctx.meta, message, time.monotonic() - start), None
    store.write_trial(trial_id_of(cfg), data, models)
    return data
