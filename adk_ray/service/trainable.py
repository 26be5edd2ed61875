"""The functions Ray Tune runs as trials: build the trial's config, run and store it, report a summary.

Rows go straight from the worker to the results store (so a multi-node cluster writing to S3 ships
no tables through the driver); Tune only sees the small summary, and the objective for a search.
"""
from __future__ import annotations

from ray import tune

from adk_ray.service.execute import TrialContext, run_and_store
from adk_ray.service.objective import objective
from adk_ray.service.spec import SearchSpec


def grid_trial(config: dict, *, ctx: TrialContext, configs: dict[str, dict]) -> None:
    """`config['trial']['trial_id']` names one of the planned trials in `configs`."""
    cfg = ctx.meta.world.config.from_dict(configs[config["trial"]["trial_id"]])
    table = run_and_store(cfg, ctx)
    tune.report(_summary(table))


def search_trial(config: dict, *, ctx: TrialContext, base: dict, search: SearchSpec) -> None:
    """`config` holds the searched fields Optuna proposed; `base` the fixed ones."""
    cfg = ctx.meta.world.config.from_dict({**base, **config})
    table = run_and_store(cfg, ctx)
    tune.report({**_summary(table), **objective(table, search)})


def _summary(table) -> dict:
    status = "error" if "error" in table.column("status").to_pylist() else "ok"
    return {"status": status, "trial_id": table.column("trial_id")[0].as_py(), "rows": table.num_rows}
