"""A sweep from request to exit code: check everything, then run what is not finished yet.

`prepare` validates the sweep, the overrides, every trial's config and the storage (a write probe that
leaves nothing behind, and the results schema of rows already there, within STORAGE_TIMEOUT_S) and
writes nothing; only then does `execute` touch Ray and the results store.
Ray is imported only in `execute`, so bad input, --list and --help answer at once.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from adk_ray.service.dashboard import DashboardRefresher
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


def execute(prep: Prepared, ray_opts, req: Request, trackers=None) -> int:
    """Run the unfinished trials; 0 if every trial is ok, 1 if any failed. `trackers`: a trackers.Trackers."""
    spec, store = prep.spec, prep.store
    ray_opts = ray_opts.for_world(spec.world)
    meta = TrialMeta(sweep=spec.name, code_version=code_version(), world=spec.world)
    ctx = TrialContext(storage=store.storage, meta=meta)
    finished = store.finished_ids()

    if spec.search:
        from adk_ray.service.search import past_trials
        base = check_base(spec)
        past = past_trials(store, base, spec.search)
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

    dashboard = DashboardRefresher(store.location)
    if pending:
        from adk_ray.service import runner  # Ray is imported only when there is work for it

        try:
            runner.connect(ray_opts)
        except Exception as e:  # noqa: BLE001 - any failure to reach Ray is one line for the user
            text = str(e).strip()
            raise SpecError(f"cannot start or reach Ray ({ray_opts.address or 'local'}): "
                            f"{text.splitlines()[0] if text else type(e).__name__}") from None
        runner.announce_dashboard()
        try:
            store.remove_temporaries()
            _write_description(store, spec, ids, params)  # before the run: the dashboard reads it meanwhile
            progress = _progress(spec, store, meta, total, done_before, failed_before, dashboard, prep.trials)
            callbacks = [progress, *(trackers.callbacks(store.location, spec.name) if trackers else [])]
            if spec.search:
                from adk_ray.service.search import make_searcher
                runner.run_search(spec.search, make_searcher(spec.search, past), pending,
                                  dataclasses.asdict(check_base(spec)), ctx, ray_opts, callbacks)
            else:
                runner.run_grid(todo, ctx, ray_opts, callbacks)
        finally:
            runner.disconnect()

    if spec.search:  # the trials are known only now
        past = past_trials(store, check_base(spec), spec.search)
        ids, params = [t for t, _, _ in past], {t: p for t, p, _ in past}
    _write_description(store, spec, ids, params)
    dashboard.refresh()
    failed = store.failed_ids(ids)
    missing = sorted(set(ids) - store.finished_ids())
    print(f"{spec.name}: {len(ids) - len(failed) - len(missing)} ok, {len(failed)} failed"
          + (f", {len(missing)} missing" if missing else "") + f" -> {store.location}", file=sys.stderr)
    return 1 if failed or missing else 0


def _write_description(store: ResultStore, spec: SweepSpec, ids: list[str], params: dict) -> None:
    store.write_json("sweep.json", describe(spec, ids, params))


def _progress(spec, store, meta, total, done, failed, dashboard, trials):
    from adk_ray.service.progress import SweepProgress

    configs = {t.trial_id: t.config for t in trials}

    def on_crash(trial_config: dict, message: str) -> None:
        """A trial whose process died never wrote its rows: write its error rows here."""
        if spec.search:
            cfg = spec.world.config.from_dict({**dataclasses.asdict(check_base(spec)), **trial_config})
        else:
            cfg = configs[trial_config["trial"]["trial_id"]]
        if trial_id_of(cfg) not in store.finished_ids():
            store.write_trial(trial_id_of(cfg), error_table(cfg, meta, message, None), None)

    return SweepProgress(spec.name, total, done, failed, dashboard, on_crash)
