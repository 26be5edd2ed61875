"""The functions Ray Tune runs as trials: build the trial's config, run and store it, report to Tune.

Rows go straight from the worker to the results store (so a multi-node cluster writing to S3 ships
no tables through the driver); Tune only sees small results: one per learning-curve step, then the
summary with each stored model's metrics (trackers.py names them), and the objective for a search.
"""
from __future__ import annotations

import ray
from ray import tune
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from adk_ray.service.execute import TrialContext, run_and_store
from adk_ray.service.objective import objective
from adk_ray.service.spec import SearchSpec
from adk_ray.service.trackers import curve_results, final_metrics, metric_columns


def grid_trial(config: dict, *, ctxs: dict[str, TrialContext], same_as: dict[tuple[str, str], str]) -> None:
    """`config['trial']` is a grid point: its sweep (a key of `ctxs`: one Tuner may run the grids of several
    sweeps) and the full trial config (`runner.run_grid`). `same_as` maps (sweep, trial id) to the sweep
    whose trial of the same config this one copies (`execute.run_and_store`)."""
    point = config["trial"]
    ctx = ctxs[point["sweep"]]
    cfg = ctx.meta.world.config.from_dict(point["config"])
    _report(_run(cfg, ctx, same_as.get((point["sweep"], point["trial_id"]))), ctx, {})


def search_trial(config: dict, *, ctx: TrialContext, base: dict, search: SearchSpec) -> None:
    """`config` holds the searched fields Optuna proposed; `base` the fixed ones."""
    cfg = ctx.meta.world.config.from_dict({**base, **config})
    table = _run(cfg, ctx)
    _report(table, ctx, objective(table, search))


def _run(cfg, ctx: TrialContext, same_as: str | None = None):
    """`run_and_store` here, or for a warm-worker world (`World.warm_workers`) in a task named after the
    trial, in the second bundle of the trial's placement group (runner.py reserves it): Ray hands the task
    a pooled worker that earlier trials already warmed up."""
    if not ctx.meta.world.warm_workers:
        return run_and_store(cfg, ctx, same_as)
    pg = get_current_placement_group()
    task = _run_task.options(name=tune.get_context().get_trial_name(), num_cpus=pg.bundle_specs[1].get("CPU", 0),
                             scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=1))
    return ray.get(task.remote(cfg, ctx, same_as))


@ray.remote(max_retries=0)  # a worker lost with its node fails the trial, which Tune retries (runner.TRIAL_RETRIES)
def _run_task(cfg, ctx: TrialContext, same_as: str | None):
    return run_and_store(cfg, ctx, same_as)


def _report(table, ctx: TrialContext, objective_values: dict) -> None:
    """The curve steps (for trackers' step metrics), then the summary. The world has already run, so
    every result can carry the objective, which Tune requires in each result of a search."""
    metrics = metric_columns(ctx.meta.world)
    for point in curve_results(table, metrics):
        tune.report({**point, **objective_values})
    tune.report({**_summary(table), **final_metrics(table, metrics), **objective_values})


def _summary(table) -> dict:
    status = "error" if "error" in table.column("status").to_pylist() else "ok"
    return {"status": status, "trial_id": table.column("trial_id")[0].as_py(), "rows": table.num_rows}
