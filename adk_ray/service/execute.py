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
from adk_ray.service.worlds import TrialConfig, run_world_trial

MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its config; small and picklable, sent to every Ray worker."""

    storage: str
    """Storage location (absolute local path or URI); results go to <storage>/<sweep>/."""
    meta: TrialMeta
    """Sweep name, code version and world stamped on the rows."""


def cache_dir_for(store: ResultStore, world: str = "mog") -> str:
    """The world's shared-stage cache: next to the results when local, else a node-local temp dir.
    The LLM world's models and token sets are shared by every sweep of one storage (llm_ppo, llm_dpo,
    llm_tau and llm_pad start from the same p', p'' and p_target of a seed), so they live beside the
    sweeps, in <storage>/llm_cache."""
    if world == "llm":
        root = os.path.dirname(store.path("cache")) if store.is_local else os.path.join(
            tempfile.gettempdir(), "adk_ray_cache", "_")
        return os.path.join(os.path.dirname(root), "llm_cache")
    if store.is_local:
        return store.path("cache")
    return os.path.join(tempfile.gettempdir(), "adk_ray_cache", store.sweep)


def run_and_store(cfg: TrialConfig, ctx: TrialContext) -> pa.Table:
    """Run one trial and write its files; never raises for a failure of the world (it becomes error rows)."""
    store = ResultStore(ctx.storage, ctx.meta.sweep)
    start = time.monotonic()
    try:
        result = run_world_trial(cfg, cache_dir_for(store, ctx.meta.world))
        wall = time.monotonic() - start
        data = ok_table(result.rows, cfg, ctx.meta, wall)
        models = models_table(result.models, cfg, ctx.meta) if result.models else None
    except Exception as e:  # noqa: BLE001 - any failure of the world is the trial's result
        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS]
        data, models = error_table(cfg, ctx.meta, message, time.monotonic() - start), None
    store.write_trial(trial_id_of(cfg), data, models)
    return data
