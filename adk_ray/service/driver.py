"""A sweep from request to exit code: check everything, then run what is not finished yet.

`prepare` validates the sweep, the overrides, every trial's config and the storage (a write probe that
leaves nothing behind, and the results schema of rows already there, within STORAGE_TIMEOUT_S) and
writes nothing; only then does `execute_many` touch Ray and the results stores, running every sweep
of one command in one Ray session. Ray is imported only in `execute_many`, so bad input, --list and
--help answer at once.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from functools import partial

from adk_ray.service.dashboard import MIN_INTERVAL_S, DashboardRefresher
from adk_ray.service.execute import TrialContext
from adk_ray.service.overrides import apply_sets
from adk_ray.service.plan import PlannedTrial, check_search, plan_trials, trial_id_of
from adk_ray.service.rows import TrialMeta, error_table
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import SweepSpec, check_base, load_spec
from adk_ray.service.schema import SCHEMA_VERSION, results_schema
from adk_ray.service.store import ResultStore, open_checked
from adk_ray.service.values import SpecError
from adk_ray.service.version import code_version


@dataclass(frozen=True)
class Request:
    """One invocation of the sweep command."""

    sweep: str
    """Sweep name or path to its YAML file."""
    storage: str = "./results"
    """Storage path or URI; results go to <storage>/<sweep name>/."""
    sets: tuple[str, ...] = ()
    """`KEY=VALUE` overrides, applied in order after --smoke."""
    smoke: bool = False
    """Shrink the sweep to seconds."""
    retry_failed: bool = False
    """Also re-run trials whose data file holds error rows."""


@dataclass(frozen=True)
class Prepared:
    spec: SweepSpec
    """The resolved sweep (after --smoke and --set)."""
    trials: list[PlannedTrial]
    """Grid trials (empty for a search)."""
    store: ResultStore
    """Its results directory."""


def prepare(req: Request) -> Prepared:
    """Everything that can be checked before running; raises SpecError, writes nothing."""
    spec = load_spec(req.sweep)
    if req.smoke:
        spec = shrink(spec)
    spec = apply_sets(spec, list(req.sets))
    if spec.search:
        check_search(spec)
        trials = []
    else:
        trials = plan_trials(spec)
    store = open_checked(req.storage, spec.name, results_schema(spec.world))
    return Prepared(spec, trials, store)


def prepare_many(reqs: list[Request]) -> list[Prepared]:
    """`prepare` for each sweep of one command; SpecError for the first bad one, nothing written."""
    preps = [prepare(req) for req in reqs]
    seen: dict[str, str] = {}
    for p in preps:
        if seen.setdefault(p.spec.name, p.spec.path) != p.spec.path:
            raise SpecError(f"{seen[p.spec.name]} and {p.spec.path} would both write to {p.store.location}")
    return preps


def describe(spec: SweepSpec, trial_ids: list[str], params: dict[str, dict]) -> dict:
    """sweep.json: the resolved spec, for the dashboard (which axis varies in which sub-grid)."""
    search = spec.search and {**dataclasses.asdict(spec.search),
                              "constraint": str(spec.search.constraint) if spec.search.constraint else None}
    return {"name": spec.name, "hypothesis": spec.hypothesis, "world": spec.world.name, "source": spec.path,
            "fixed": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.fixed.items()},
            "grid": [{k: list(v) for k, v in sub.items()} for sub in spec.grid],
            "seeds": list(spec.seeds), "group_by": list(spec.group_by), "smoke": spec.smoke,
            "search": search, "trial_count": len(trial_ids) if not spec.search else spec.search.num_samples,
            "trials": [{"trial_id": t, "params": params.get(t, {})} for t in trial_ids],
            "schema_version": SCHEMA_VERSION, "code_version": code_version()}


@dataclass
class _Run:
    """One sweep's part of a command: what is planned, what is finished, what this run does."""

    prep: Prepared
    req: Request
    ctx: TrialContext
    ids: list[str]
    """Every trial of the sweep (a search: those run so far)."""
    params: dict[str, dict]
    todo: list[PlannedTrial]
    """Grid trials to run now."""
    total: int
    pending: int
    done_before: int
    failed_before: int
    past: list = dataclasses.field(default_factory=list)
    """A search's earlier trials (search.past_trials), less those --retry-failed re-runs."""


def execute_many(sweeps: list[tuple[Prepared, Request]], ray_opts, trackers=None,
                 plotly_js: str = "inline") -> list[int]:
    """Run the unfinished trials of every sweep in one Ray session, then write each sweep's dashboard and
    the storage's index; per sweep 0 if every trial is ok, 1 if any failed. The grid trials of all sweeps
    of one world share one Tuner (longest first, so no core idles behind one long trial); a search
    has a Tuner of its own, run at the same time (`runner.run_tuners`). `trackers` (a trackers.Trackers)
    needs a single sweep."""
    runs = [_plan(prep, req) for prep, req in sweeps]
    # One sweep's page is redrawn at most every MIN_INTERVAL_S; with many sweeps, each less often, so
    # that drawing pages never takes more of the driver than one sweep's would.
    interval = MIN_INTERVAL_S * len(runs)
    dashboards = {r.prep.spec.name: DashboardRefresher(r.prep.store.location, interval, plotly_js) for r in runs}
    if any(r.pending for r in runs):
        from adk_ray.service import runner  # Ray is imported only when there is work for it

        try:
            runner.connect(ray_opts)
        except Exception as e:  # noqa: BLE001 - any failure to reach Ray is one line for the user
            text = str(e).strip()
            raise SpecError(f"cannot start or reach Ray ({ray_opts.address or 'local'}): "
                            f"{text.splitlines()[0] if text else type(e).__name__}") from None
        runner.announce_dashboard()
        progress = _progress(runs, dashboards)
        try:
            for r in runs:
                r.prep.store.remove_temporaries()
                _write_description(r.prep.store, r.prep.spec, r.ids, r.params)  # the dashboard reads it meanwhile
            only = runs[0].prep
            tracking = trackers.callbacks(only.store.location, only.spec.name) if trackers else []
            runner.run_tuners(_tuner_jobs(runs, runner, ray_opts, progress, tracking))
        finally:
            progress.close()
            runner.disconnect()
    codes = [_finish(r, dashboards[r.prep.spec.name]) for r in runs]
    _write_index(runs[0].prep.store, always=len(runs) > 1)
    return codes


def _tuner_jobs(runs: list[_Run], runner, ray_opts, progress, trackers: list) -> list:
    """One Tuner per world for the grid trials of every sweep, and one per search; `runner.run_tuners`
    runs them at once."""
    grids = [r for r in runs if r.todo]
    jobs = [partial(runner.run_grid, [(r.ctx, r.todo) for r in grids if r.prep.spec.world is world],
                    ray_opts.for_world(world), [progress, *trackers])
            for world in dict.fromkeys(r.prep.spec.world for r in grids)]
    for r in runs:
        if r.prep.spec.search and r.pending:
            from adk_ray.service.search import make_searcher
            spec = r.prep.spec
            jobs.append(partial(runner.run_search, spec.search, make_searcher(spec.search, r.past), r.pending,
                                dataclasses.asdict(check_base(spec)), r.ctx, ray_opts.for_world(spec.world),
                                [progress.for_search(spec.name), *trackers]))
    return jobs


def _plan(prep: Prepared, req: Request) -> _Run:
    """What is finished and what to run; prints the sweep's one-line plan."""
    spec, store = prep.spec, prep.store
    meta = TrialMeta(sweep=spec.name, code_version=code_version(), world=spec.world)
    ctx = TrialContext(storage=store.storage, meta=meta)
    finished = store.finished_ids()
    past, todo = [], []
    if spec.search:
        from adk_ray.service.search import past_trials
        past = past_trials(store, check_base(spec), spec.search)
        retry = set(store.failed_ids([t for t, _, _ in past])) if req.retry_failed else set()
        past = [p for p in past if p[0] not in retry]
        ids, params = [t for t, _, _ in past], {t: p for t, p, _ in past}
        total, pending = spec.search.num_samples, max(0, spec.search.num_samples - len(past))
    else:
        ids, params = [t.trial_id for t in prep.trials], {t.trial_id: t.params for t in prep.trials}
        retry = set(store.failed_ids(ids)) if req.retry_failed else set()
        todo = [t for t in prep.trials if t.trial_id not in finished or t.trial_id in retry]
        total, pending = len(prep.trials), len(todo)
    done_before = total - pending
    failed_before = len(store.failed_ids(set(ids) - retry))  # finished earlier, failed, not retried
    print(f"{spec.name}: {total} trial(s), {done_before} already finished, {pending} to run -> {store.location}",
          file=sys.stderr)
    return _Run(prep, req, ctx, ids, params, todo, total, pending, done_before, failed_before, past)


def _finish(r: _Run, dashboard: DashboardRefresher) -> int:
    """sweep.json with the trials known now, the final dashboard and the sweep's one-line outcome."""
    spec, store, ids, params = r.prep.spec, r.prep.store, r.ids, r.params
    if spec.search:  # the trials are known only now
        from adk_ray.service.search import past_trials
        past = past_trials(store, check_base(spec), spec.search)
        ids, params = [t for t, _, _ in past], {t: p for t, p, _ in past}
    _write_description(store, spec, ids, params)
    dashboard.refresh()
    failed = store.failed_ids(ids)
    missing = sorted(set(ids) - store.finished_ids())
    print(f"{spec.name}: {len(ids) - len(failed) - len(missing)} ok, {len(failed)} failed"
          + (f", {len(missing)} missing" if missing else "") + f" -> {store.location}", file=sys.stderr)
    return 1 if failed or missing else 0


def _write_index(store: ResultStore, always: bool) -> None:
    """index.html of the storage root, linking every sweep there: after a run of several sweeps, and
    after a single sweep's where one is there already (kept current). Like the dashboard, a convenience:
    a failure is a warning."""
    try:
        from adk_ray.dashboards.index import index_exists, write_index
        if always or index_exists(store.storage):
            write_index(store.storage)
    except Exception as e:  # noqa: BLE001
        print(f"warning: index.html not written ({f'{type(e).__name__}: {e}'.splitlines()[0]})", file=sys.stderr)


def _write_description(store: ResultStore, spec: SweepSpec, ids: list[str], params: dict) -> None:
    store.write_json("sweep.json", describe(spec, ids, params))


def _progress(runs: list[_Run], dashboards: dict[str, DashboardRefresher]):
    from adk_ray.service.progress import SweepProgress

    by_name = {r.prep.spec.name: r for r in runs}

    def on_crash(sweep: str, trial_config: dict, message: str) -> None:
        """A trial whose process died never wrote its rows: write its error rows here."""
        r = by_name[sweep]
        spec, store = r.prep.spec, r.prep.store
        if spec.search:
            cfg = spec.world.config.from_dict({**dataclasses.asdict(check_base(spec)), **trial_config})
        else:
            cfg = spec.world.config.from_dict(trial_config["trial"]["config"])
        if trial_id_of(cfg) not in store.finished_ids():
            store.write_trial(trial_id_of(cfg), error_table(cfg, r.ctx.meta, message, None), None)

    desc = runs[0].prep.spec.name if len(runs) == 1 else f"{len(runs)} sweeps"
    return SweepProgress(desc, sum(r.total for r in runs), sum(r.done_before for r in runs),
                         sum(r.failed_before for r in runs), dashboards, on_crash)
