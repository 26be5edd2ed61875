"""The functions Ray Tune runs as trials: build the trial's config, run and store it, report to Tune.

Rows go straight from the worker to the results store (so a multi-node cluster writing to S3 ships
no tables through the driver); Tune only sees small results: one per learning-curve step, then the
summary with each stored model's metrics (trackers.py names them), and the objective for a search.
"""
from __future__ import annotations

from ray import tune

from adk_ray.service.execute import TrialContext, run_and_store
from adk_ray.service.objective import objective
from adk_ray.service.spec import SearchSpec
from adk_ray.service.trackers import curve_results, final_metrics, metric_columns


def grid_trial(config: dict, *, ctxs: dict[str, TrialContext]) -> None:
    """`config['trial']` is a grid point: its sweep (a key of `ctxs`: one Tuner may run the grids of several
    sweeps) and the full trial config (`runner.run_grid`)."""
    point = config["trial"]
    ctx = ctxs[point["sweep"]]
    cfg = ctx.meta.world.config.from_dict(point["config"])
    _report(run_and_store(cfg, ctx), ctx, {})


def search_trial(config: dict, *, ctx: TrialContext, base: dict, search: SearchSpec) -> None:
    """`config` holds the searched fields Optuna proposed; `base` the fixed ones."""
    cfg = ctx.meta.world.config.from_dict({**base, **config})
    table = run_and_store(cfg, ctx)
    _report(table, ctx, objective(table, search))


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
