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


def run_and_store(cfg: TrialConfig, ctx: TrialContext, same_as: str | None = None) -> pa.Table:
    """Run one trial and write its files; never raises for a failure of the world (it becomes error rows).

    `same_as`: another sweep of this storage that runs the same config (so the same trial id) in this
    command; when its rows are there and none says 'error', they are this trial's too (`copy_trial`)."""
    store = ResultStore(ctx.storage, ctx.meta.sweep)
    if same_as:
        copied = copy_trial(ResultStore(ctx.storage, same_as), store, trial_id_of(cfg))
        if copied is not None:
            return copied
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


def copy_trial(source: ResultStore, target: ResultStore, trial_id: str) -> pa.Table | None:
    """`source`'s finished trial as `target`'s: the same files, only their `sweep` column changed. None when
    `source` has no rows of it yet or its rows say 'error' (the trial then runs itself).

    A trial id is a hash of the whole config, and every draw of a trial derives from its config's seeds, so
    the copy holds what running it again would write: in the MoG world bit for bit (the gallery of
    dashboards/ made with copies equals the one made without). `wall_seconds` stays the original's: the
    time of the trial that produced the rows (docs/results.md)."""
    tables = source.read_trial(trial_id)  # one file lookup, not a listing of every finished trial
    if tables is None or "error" in tables[0].column("status").to_pylist():
        return None
    data, models, samples = (_as_sweep(t, target.sweep) for t in tables)
    target.write_trial(trial_id, data, models, samples)
    return data


def _as_sweep(table: pa.Table | None, sweep: str) -> pa.Table | None:
    if table is None:
        return None
    i = table.schema.get_field_index("sweep")
    return table.set_column(i, table.schema.field(i), pa.array([sweep] * table.num_rows, table.schema.field(i).type))
