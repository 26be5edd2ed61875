"""Connect to Ray and run a sweep's pending trials with a Ray Tune Tuner.

Tune's own experiment directory goes to a throwaway local temp dir: correctness of resume rests on the
results store's data files, not on Tune's experiment restore.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile

# Read when Tune starts; our tqdm bar replaces its console output.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0; the new one prints tables

import ray  # noqa: E402
from ray import tune  # noqa: E402

from adk_ray.service.execute import TrialContext  # noqa: E402
from adk_ray.service.plan import PlannedTrial  # noqa: E402
from adk_ray.service.progress import named_trainable  # noqa: E402
from adk_ray.service.ray_options import RayOptions, cluster_left_behind, unanswered  # noqa: E402
from adk_ray.service.spec import SearchSpec  # noqa: E402
from adk_ray.service.trainable import grid_trial, search_trial  # noqa: E402

TRIAL_RETRIES = 2
"""How often Tune restarts a trial whose process died (a lost node, a killed worker) before it counts as
failed; a failure inside the world is never retried (it becomes error rows). A restarted trial runs from
its start and rewrites the same data file, so its rows are there exactly once."""

FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
                 "GOOGLE_APPLICATION_CREDENTIALS")
"""The driver's storage credentials and endpoints, handed to every trial's process (Ray's runtime_env
env_vars): workers on other nodes were started by `ray start` with that node's environment, not the
driver's, and pyarrow's S3/GCS filesystems read these variables."""


def connect(opts: RayOptions) -> None:
    """Attach to a cluster (--address, or RAY_ADDRESS as `ray job submit` sets it) or start one.

    With neither, a cluster that `ray start` left on this machine is joined only if it answers within
    PROBE_TIMEOUT_S: plain ray.init() follows the cluster file of a head that died without `ray stop`
    and retries its address for as long as it is let. Else a fresh local cluster, said in one line.
    """
    env_vars = forwarded_env()
    quiet = dict(logging_level=logging.WARNING, **({"runtime_env": {"env_vars": env_vars}} if env_vars else {}))
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if address:  # checked by check_reachable before anything ran
        ray.init(address=address, **quiet)
        return
    if opts.num_cpus is None and opts.dashboard:
        left = cluster_left_behind()
        problem = left and unanswered(left)
        if left and not problem:
            ray.init(address=left, **quiet)
            return
        if left:
            print(f"Ray: the cluster that `ray start` left at {left} does not answer ({problem}); "
                  "starting a fresh local one", file=sys.stderr)
    ray.init(address="local", num_cpus=opts.num_cpus, include_dashboard=None if opts.dashboard else False, **quiet)


def forwarded_env() -> dict[str, str]:
    """The FORWARDED_ENV variables this driver has, less those a submitted job's own runtime_env sets
    (ray.init refuses a runtime_env that sets the same variable as the job's)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR  # where Ray itself reads it

    job = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR) or "{}")
    taken = set(((job.get("runtime_env") or {}).get("env_vars") or {}))
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ and k not in taken}


def announce_dashboard() -> None:
    """One line naming the Ray dashboard, and with token auth the command that prints the token."""
    from adk_ray.service.progress import dashboard_line
    line = dashboard_line()
    if line:
        print(line, file=sys.stderr)


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def run_grid(parts: list[tuple[TrialContext, list[PlannedTrial]]], opts: RayOptions, callbacks: list) -> None:
    """The grid trials of one or more sweeps (of one world) in one Tuner: `parts` pairs each sweep's
    context with its pending trials, so the trials of every sweep share the cluster from start to end."""
    # Longest first (Tune starts grid points in list order): the one 3000-step trial of an iteration
    # sweep otherwise starts last and runs alone while the other CPUs idle.
    trials = sorted(((ctx, t) for ctx, ts in parts for t in ts),
                    key=lambda ct: -max(ct[1].config.iterations) * len(ct[1].config.seeds))
    ctxs = {ctx.meta.sweep: ctx for ctx, _ in parts}
    trainable = tune.with_parameters(grid_trial, ctxs=ctxs)
    # The full config rides along in the point: the trial builds its config from it, and trackers log it
    # as the trial's parameters.
    points = [{"sweep": ctx.meta.sweep, "trial_id": t.trial_id, **t.params,
               "config": dataclasses.asdict(t.config)} for ctx, t in trials]
    name = next(iter(ctxs)) if len(ctxs) == 1 else "sweeps"
    _fit(trainable, {"trial": tune.grid_search(points)}, tune.TuneConfig(
        max_concurrent_trials=opts.max_concurrent,
        trial_name_creator=lambda trial: _grid_name(trial, with_sweep=len(ctxs) > 1),
        trial_dirname_creator=lambda trial: trial.trial_id), name, opts, callbacks,
        warm=next(iter(ctxs.values())).meta.world.warm_workers)


def run_search(search: SearchSpec, searcher, num_samples: int, base: dict, ctx: TrialContext,
               opts: RayOptions, callbacks: list) -> None:
    trainable = tune.with_parameters(search_trial, ctx=ctx, base=base, search=search)
    _fit(trainable, {}, tune.TuneConfig(
        search_alg=searcher, num_samples=num_samples, max_concurrent_trials=opts.max_concurrent,
        trial_dirname_creator=lambda trial: trial.trial_id), ctx.meta.sweep, opts, callbacks,
        warm=ctx.meta.world.warm_workers)


def _fit(trainable, param_space: dict, tune_config: tune.TuneConfig, name: str, opts: RayOptions,
         callbacks: list, warm: bool) -> None:
    """One Tuner; `warm`: the world's trials run as named tasks on reused workers (`World.warm_workers`)."""
    tune_dir = tempfile.mkdtemp(prefix=f"adk_ray_tune_{name}_")
    if warm:  # the trial's task carries its name; the reused actor that waits on it is one of a few
        trainable, resources = named_trainable(trainable, "trial runner"), tune.PlacementGroupFactory(
            opts.warm_trial_bundles())
        tune_config = dataclasses.replace(tune_config, reuse_actors=True)
    else:
        trainable, resources = named_trainable(trainable), opts.trial_resources()
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=param_space, tune_config=tune_config,
            run_config=tune.RunConfig(name=name, storage_path=tune_dir, verbose=0, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES)))
        tuner.fit()
    finally:
        shutil.rmtree(tune_dir, ignore_errors=True)


def _grid_name(trial, with_sweep: bool = False) -> str:
    """The grid point, e.g. `beta=0.5,iterations=300` (Tune's tables; in the Ray dashboard the trial's task,
    or its actor where the world has no warm workers),
    after its sweep's name (`mog_ppo:beta=0.5,...`) when one Tuner runs several sweeps."""
    from adk_ray.service.progress import point_name
    point = trial.config["trial"]
    return (f"{point['sweep']}:" if with_sweep else "") + point_name(point)

