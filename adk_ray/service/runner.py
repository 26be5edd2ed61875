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
import threading
from typing import Callable

# Read when Tune starts; our tqdm bar replaces its console output (the legacy reporter is silent at
# verbose=0; the new one prints tables).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from adk_ray.service.execute import TrialContext  # noqa: E402
from adk_ray.service.plan import PlannedTrial  # noqa: E402
from adk_ray.service.progress import named_trainable  # noqa: E402
from adk_ray.service.ray_options import (LOCAL_TRAIN_ENV, WARM_WORKERS, RayOptions,  # noqa: E402
                                         cluster_left_behind, unanswered)
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
    and retries its address for as long as it is let. Else a fresh local cluster, said in one line, with
    warm workers and Ray Train's faster poll (`ray_options.WARM_WORKERS`, `LOCAL_TRAIN_ENV`).
    """
    env_vars = forwarded_env()

    def init(address: str, env: dict[str, str], **kwargs) -> None:
        ray.init(address=address, logging_level=logging.WARNING,
                 **({"runtime_env": {"env_vars": env}} if env else {}), **kwargs)

    address = opts.address or os.environ.get("RAY_ADDRESS")
    if address:  # checked by check_reachable before anything ran
        init(address, env_vars)
        return
    if opts.num_cpus is None and opts.dashboard:
        left = cluster_left_behind()
        problem = left and unanswered(left)
        if left and not problem:
            init(left, env_vars)
            return
        if left:
            print(f"Ray: the cluster that `ray start` left at {left} does not answer ({problem}); "
                  "starting a fresh local one", file=sys.stderr)
    local_env = {k: v for k, v in LOCAL_TRAIN_ENV.items() if k not in os.environ}
    init("local", {**local_env, **env_vars}, num_cpus=opts.num_cpus,
         include_dashboard=None if opts.dashboard else False, _system_config=WARM_WORKERS)


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


def run_tuners(jobs: list[Callable[[threading.Event | None], None]]) -> None:
    """Run Tuners at the same time, so that their trials share the cluster from start to end (a search's
    trials fill the cores that a grid's last long trials leave idle, instead of starting after them).

    Each job is `job(stop)`, a `run_grid` or `run_search` with all but `stop` bound. One job runs in this
    thread, where Tune handles Ctrl+C itself. Several run in a thread each (Tune does not catch signals
    outside the main thread): Ctrl+C here sets `stop`, which ends every Tuner at its next step
    (`_StopAll`), and is raised again once they all have. An exception in a job is raised here after the
    others have finished.
    """
    if len(jobs) == 1:
        jobs[0](None)
        return
    _lock_tune_registry()
    stop, errors = threading.Event(), []

    def guarded(job):
        try:
            job(stop)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(job,), name=f"tuner-{i}", daemon=True)
               for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]


def _lock_tune_registry() -> None:
    """Make Tune's global registry safe for Tuners that start in two threads at once: `register` adds to a
    dict that it then iterates to flush it, so a second thread's `register` can break the first one's
    loop ("dictionary changed size during iteration"). Everything else a Tuner keeps is its own."""
    from ray.tune import registry

    reg = registry._global_registry
    if getattr(reg.register, "_adk_ray_locked", False):
        return
    lock, register = threading.Lock(), reg.register

    def locked(*args, **kwargs):
        with lock:
            return register(*args, **kwargs)
    locked._adk_ray_locked = True
    reg.register = locked


class _StopAll(tune.Stopper):
    """Ends a Tuner run in a thread of `run_tuners` when its `stop` event is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, trial_id, result) -> bool:
        return self.event.is_set()

    def stop_all(self) -> bool:
        return self.event.is_set()

    def __getstate__(self) -> dict:  # the Tuner pickles its run config (an event cannot be); the copy never runs
        return {}

    def __setstate__(self, state: dict) -> None:
        self.event = threading.Event()


def run_grid(parts: list[tuple[TrialContext, list[PlannedTrial]]], opts: RayOptions, callbacks: list,
             stop: threading.Event | None = None) -> None:
    """The grid trials of one or more sweeps (of one world) in one Tuner: `parts` pairs each sweep's
    context with its pending trials, so the trials of every sweep share the cluster from start to end."""
    # Longest first (Tune starts grid points in list order): the one 3000-step trial of an iteration
    # sweep otherwise starts last and runs alone while the other CPUs idle.
    trials = sorted(((ctx, t) for ctx, ts in parts for t in ts),
                    key=lambda ct: -max(ct[1].config.iterations) * len(ct[1].config.seeds))
    trials, same_as = _copies_last(trials)
    ctxs = {ctx.meta.sweep: ctx for ctx, _ in parts}
    trainable = tune.with_parameters(grid_trial, ctxs=ctxs, same_as=same_as)
    # The full config rides along in the point: the trial builds its config from it, and trackers log it
    # as the trial's parameters.
    points = [{"sweep": ctx.meta.sweep, "trial_id": t.trial_id, **t.params,
               "config": dataclasses.asdict(t.config)} for ctx, t in trials]
    name = next(iter(ctxs)) if len(ctxs) == 1 else "sweeps"
    _fit(trainable, {"trial": tune.grid_search(points)}, tune.TuneConfig(
        max_concurrent_trials=opts.max_concurrent,
        trial_name_creator=lambda trial: _grid_name(trial, with_sweep=len(ctxs) > 1),
        trial_dirname_creator=lambda trial: trial.trial_id), name, opts, callbacks,
        warm=next(iter(ctxs.values())).meta.world.warm_workers, stop=stop)


def _copies_last(trials: list[tuple[TrialContext, PlannedTrial]]):
    """A config that several sweeps of the command plan (mog_trap's and mog_kd_beta's PPO at β_KD = 2, say)
    runs once: its later occurrences go to the end of the queue, where the first has usually finished, and
    copy its rows (or run, if it has not).
    Returns (trials in run order, {(sweep, trial id): the sweep whose trial it copies})."""
    first: dict[str, str] = {}
    originals, copies = [], []
    for ctx, t in trials:
        (copies if t.trial_id in first else originals).append((ctx, t))
        first.setdefault(t.trial_id, ctx.meta.sweep)
    return originals + copies, {(ctx.meta.sweep, t.trial_id): first[t.trial_id] for ctx, t in copies}


def run_search(search: SearchSpec, searcher, num_samples: int, base: dict, ctx: TrialContext,
               opts: RayOptions, callbacks: list, stop: threading.Event | None = None) -> None:
    trainable = tune.with_parameters(search_trial, ctx=ctx, base=base, search=search)
    _fit(trainable, {}, tune.TuneConfig(
        search_alg=searcher, num_samples=num_samples, max_concurrent_trials=opts.max_concurrent,
        trial_dirname_creator=lambda trial: trial.trial_id), ctx.meta.sweep, opts, callbacks,
        warm=ctx.meta.world.warm_workers, stop=stop)


def _fit(trainable, param_space: dict, tune_config: tune.TuneConfig, name: str, opts: RayOptions,
         callbacks: list, warm: bool, stop: threading.Event | None) -> None:
    """One Tuner; `warm`: the world's trials run as named tasks on reused workers (`World.warm_workers`);
    `stop`: an event that ends it (`run_tuners`)."""
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
                                      stop=_StopAll(stop) if stop else None,
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

