"""A trial's rows as Arrow tables: the world's metric rows (or error rows) plus the service's columns."""
from __future__ import annotations

import dataclasses
import logging

import pyarrow as pa

from adk_ray.columns import PIPELINES

from adk_ray.service.plan import config_json, trial_id_of
from adk_ray.service.schema import results_schema
from adk_ray.service.values import TUPLE_FIELDS
from adk_ray.service.worlds import TrialConfig, World

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrialMeta:
    """What the service knows about a trial beyond its config."""

    sweep: str
    """Sweep name."""
    code_version: str
    """`git describe` of the code, or the package version."""
    world: World
    """World that ran it (its name is the rows' `world` column)."""


def _config_row(cfg: TrialConfig, meta: TrialMeta, wall_seconds: float | None) -> dict:
    """Columns every row of the trial shares: its scalar config fields and the service columns."""
    scalars = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in TUPLE_FIELDS}
    return {"sweep": meta.sweep, "trial_id": trial_id_of(cfg), "world": meta.world.name, **scalars,
            "wall_seconds": wall_seconds, "config_json": config_json(cfg), "code_version": meta.code_version}


def ok_table(rows: list[dict], cfg: TrialConfig, meta: TrialMeta, wall_seconds: float) -> pa.Table:
    schema = results_schema(meta.world)
    extra = sorted({k for r in rows for k in r} - set(schema.names))
    if extra:  # the schema is fixed so every file of a sweep reads as one table; say what is dropped
        log.warning("dropping columns the results schema does not have: %s", ", ".join(extra))
    shared = _config_row(cfg, meta, wall_seconds)
    # The world's own values win for per-row columns (iterations, seed, step, metrics); the config
    # supplies the rest, so every row carries every parameter even if the world omits some.
    full = [{**shared, **{k: v for k, v in r.items() if k in schema.names}, "status": "ok", "error": None}
            for r in rows]
    return pa.Table.from_pylist(full, schema=schema)


def error_table(cfg: TrialConfig, meta: TrialMeta, message: str, wall_seconds: float | None) -> pa.Table:
    """One 'final' row per (pipeline, seed, iteration count) with null metrics and the error text.

    One per iteration count, not just per seed, so every box of an iteration axis shows the failure.
    """
    shared = _config_row(cfg, meta, wall_seconds)
    rows = [{**shared, "pipeline": p, "stage": "final", "seed": s, "iterations": it,
             "status": "error", "error": message}
            for p in PIPELINES for s in cfg.seeds for it in cfg.iterations]
    return pa.Table.from_pylist(rows, schema=results_schema(meta.world))


def models_table(models: list[dict], cfg: TrialConfig, meta: TrialMeta) -> pa.Table:
    """The world's stored model parameters (MoG) or text samples (LLM), tagged with the sweep and trial
    (schema inferred)."""
    tid = trial_id_of(cfg)
    return pa.Table.from_pylist([{"sweep": meta.sweep, "trial_id": tid, **m} for m in models])
