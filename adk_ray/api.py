"""The Python API: run a sweep from a notebook or script and get its results as a pandas DataFrame.

    import adk_ray
    df = adk_ray.run_sweep("mog_ppo", smoke=True, storage="/tmp/results")
    df[df.stage == "final"].groupby(["pipeline", "beta"]).final_average_reward.median()

`run_sweep` is what `python -m adk_ray.sweep` runs (the CLI is a thin layer over `run`): the same
validation before anything is written or Ray is started, the same resume from the data files, the
same one-line messages, raised here as `SweepError`. `load_results` reads any sweep's results
directory (a local path or a pyarrow URI such as s3://bucket/results/mog_ppo) exactly as the
dashboard loads it. Ray is imported only inside adk_ray.service, when a sweep has trials to run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import pandas as pd

STORAGE_ENV = "ADK_RAY_STORAGE"
"""Environment variable naming the default storage (else ./results), for the CLI and the API alike."""


class SweepError(Exception):
    """Bad input to a sweep (unknown sweep, bad override, unusable storage, unreachable Ray, ...), or a
    results directory that holds no sweep; `str()` is the one line the CLI prints (exit code 2)."""


@dataclass(frozen=True)
class Outcome:
    """What a finished `run` says."""

    exit_code: int
    """0 every trial ok, 1 some trial failed or is missing (its rows say why)."""
    location: str
    """The sweep's results directory, `<storage>/<sweep>` (a local path or URI)."""


def default_storage() -> str:
    return os.environ.get(STORAGE_ENV) or "./results"


def overrides_to_sets(overrides: Mapping | Iterable[str] | None) -> tuple[str, ...]:
    """`{"beta": [1.0, 2.0], "seeds": 8}` -> ("beta=1.0,2.0", "seeds=8"): the CLI's `--set` strings, so
    both paths share one parser and one set of messages. Strings "KEY=VALUE" pass through."""
    if overrides is None:
        return ()
    if not isinstance(overrides, Mapping):
        return tuple(str(s) for s in overrides)

    def text(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return ",".join(text(x) for x in v)
        return str(v)
    return tuple(f"{k}={text(v)}" for k, v in overrides.items())


def run(sweeps: str | Sequence[str], sets: Iterable[str] = (), storage: str | None = None, smoke: bool = False,
        retry_failed: bool = False, ray_options=None, trackers=None, dry_run: bool = False,
        plotly_js: str = "inline") -> list:
    """Validate every sweep, then run their unfinished trials in one Ray session; the CLI's whole job.

    `sweeps`: names, YAML paths or shell patterns (`'mog_*'`); `sets`, `smoke` and `retry_failed` apply to
    each. `ray_options` is a service.ray_options.RayOptions, `trackers` a service.trackers.Trackers (one
    sweep only). `plotly_js`: the dashboards' "inline" plotly.js, or "shared" (dashboards.page.PLOTLY_JS).
    Returns one Outcome per sweep, or with `dry_run` one service.driver.Prepared per sweep (the resolved
    spec and the planned trials), nothing run or written. Raises SweepError before anything is written.
    """
    from adk_ray.dashboards.page import PLOTLY_JS
    from adk_ray.service.driver import Request, execute_many, prepare_many
    from adk_ray.service.ray_options import RayOptions, check_reachable
    from adk_ray.service.spec import expand_names
    from adk_ray.service.values import SpecError

    opts = ray_options or RayOptions()
    try:
        names = expand_names([sweeps] if isinstance(sweeps, str) else list(sweeps))
        if not names:
            raise SpecError("no sweep named")
        if plotly_js not in PLOTLY_JS:
            raise SpecError(f"plotly_js {plotly_js!r} is not one of {', '.join(PLOTLY_JS)}")
        reqs = [Request(sweep=n, storage=storage or default_storage(), sets=tuple(sets), smoke=smoke,
                        retry_failed=retry_failed) for n in names]
        preps = prepare_many(reqs)
        if dry_run:
            return preps
        if trackers is not None:
            if len(preps) > 1:
                raise SpecError(f"--tracker logs one sweep at a time; {len(preps)} sweeps named")
            trackers.check()
        check_reachable(opts.address)
        codes = execute_many(list(zip(preps, reqs)), opts, trackers=trackers, plotly_js=plotly_js)
    except SpecError as e:
        raise SweepError(str(e)) from None
    return [Outcome(code, prep.store.location) for code, prep in zip(codes, preps)]


def run_sweep(name_or_path: str | Sequence[str], overrides: Mapping | Iterable[str] | None = None, storage: str | None = None,
              smoke: bool = False, address: str | None = None, *, retry_failed: bool = False,
              num_cpus: int | None = None, dashboard: bool = True, cpus_per_trial: float | None = None,
              max_concurrent: int | None = None, trackers: Iterable[str] = (),
              tracking_uri: str | None = None) -> pd.DataFrame:
    """Run a sweep as `python -m adk_ray.sweep` does and return its rows (docs/results.md) as a DataFrame.

    name_or_path: a sweep name (sweeps/NAME.yaml) or a YAML path; or several, and shell patterns
    (`"mog_*"`), run in one Ray session: the rows of all of them (their `sweep` column tells them apart). overrides: `--set` as a dict
    (`{"beta": [1.0, 2.0], "seeds": 8}`; a list value becomes an axis) or "KEY=VALUE" strings.
    storage: where results go (`<storage>/<sweep>/`); default $ADK_RAY_STORAGE, else ./results.
    address: a Ray cluster; default $RAY_ADDRESS, else a cluster `ray start` left here, else an
    embedded one. The keyword-only options are the CLI's flags of the same names.

    Re-running resumes: finished trials are read back, not recomputed. Failed trials do not raise:
    their rows carry status "error" and the message (`df.attrs["exit_code"]` is 1 then). With several
    sweeps, `df.attrs["sweep"]` and `df.attrs["location"]` are lists, one entry per sweep.
    Raises SweepError (one line) for bad input, before anything is written.
    """
    from adk_ray.service.ray_options import RayOptions
    from adk_ray.service.trackers import Trackers

    opts = RayOptions(address=address, num_cpus=num_cpus, dashboard=dashboard, cpus_per_trial=cpus_per_trial,
                      max_concurrent=max_concurrent)
    chosen = Trackers(tuple(trackers), tracking_uri) if trackers else None
    outcomes = run(name_or_path, overrides_to_sets(overrides), storage, smoke, retry_failed, opts, chosen)
    if len(outcomes) == 1:
        df = load_results(outcomes[0].location)
    else:
        frames = [load_results(o.location) for o in outcomes]
        df = pd.concat(frames, ignore_index=True, sort=False)
        df.attrs.update(sweep=[f.attrs["sweep"] for f in frames], notices=[n for f in frames for n in f.attrs["notices"]],
                        location=[o.location for o in outcomes])
    df.attrs["exit_code"] = max(o.exit_code for o in outcomes)
    return df


def load_results(path: str) -> pd.DataFrame:
    """Rows of a sweep's results directory (local path or URI, e.g. results/mog_ppo), read as the dashboard
    reads them: every finished data file, only the latest run's trials when variants share the folder.

    `df.attrs` holds "sweep" (sweep.json, or None), "notices" (what was missing or skipped) and "location".
    Raises SweepError when the path holds neither sweep.json nor data files.
    """
    from adk_ray.dashboards.load import load_results as load
    from adk_ray.storage import StorageError

    try:
        res = load(path)
    except (StorageError, OSError) as e:
        raise SweepError(f"cannot read results at {path}: {e}") from None
    if res.sweep is None and res.rows.empty:
        raise SweepError(f"no sweep results at {path} (expected sweep.json and data/*.parquet there)")
    df = res.rows
    df.attrs.update(sweep=res.sweep, notices=list(res.notices), location=path)
    return df
