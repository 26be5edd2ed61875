"""`python -m adk_ray.sweep`: run sweep files as Ray Tune trials into Arrow datasets (docs/sweeps.md).

A thin layer over adk_ray.api (`run`, which `adk_ray.run_sweep` also calls): it parses flags, prints the
one-line SweepError and maps the outcome to an exit code.

Exit codes: 0 every trial ok; 1 some trial failed (its rows say why); 2 bad input (one line on
stderr, nothing written); 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys

from adk_ray.api import STORAGE_ENV, SweepError, default_storage, run
from adk_ray.service.ray_options import RayOptions
from adk_ray.dashboards.page import PLOTLY_JS
from adk_ray.service.spec import hypothesis_of, list_sweeps, load_spec
from adk_ray.service.values import SpecError
from adk_ray.service.trackers import TRACKERS, Trackers

PROG = "python -m adk_ray.sweep"

EPILOG = """\
examples:
  python -m adk_ray.sweep --list
  python -m adk_ray.sweep mog_ppo                                  # embedded local Ray
  python -m adk_ray.sweep mog_ppo mog_dpo                          # two sweeps, one Ray session
  python -m adk_ray.sweep 'mog_*'                                  # every MoG sweep (quote the pattern)
  python -m adk_ray.sweep mog_ppo --smoke --storage /tmp/results    # seconds, for a try-out
  python -m adk_ray.sweep mog_ppo --set beta=1.0,2.0 --set seeds=8
  python -m adk_ray.sweep mog_ppo --storage s3://bucket/results
  python -m adk_ray.sweep llm_ppo --smoke                           # the LLM world on the tiny preset
  python -m adk_ray.sweep mog_ppo --smoke --tracker mlflow          # also log to MLflow (<storage>/mog_ppo/mlflow.db)
  ray job submit -- python -m adk_ray.sweep mog_ppo                 # on a Ray cluster

--set KEY=VALUE: KEY is a field of the world's trial config (MoGTrialConfig, LLMTrialConfig) or `seeds`. seeds=N means seeds 0..N-1, a list
(seeds=3,5) names them. A KEY that is a grid axis gets its values replaced in every sub-grid; any
other KEY with one value is a fixed setting; with several comma-separated values it becomes an axis.
--set applies after --smoke, so it wins.

Several NAMEs (or a shell pattern such as 'mog_*') run in one Ray session: one progress bar, the trials
of all sweeps sharing the CPUs, each sweep writing <storage>/<NAME>/ as alone, then <storage>/index.html
linking every sweep's dashboard. --set and --smoke apply to each.

Re-running the same command resumes: trials whose data file exists are not recomputed.
exit codes: 0 all trials ok, 1 some trial failed, 2 bad input (nothing written), 130 interrupted.
"""


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog=PROG, description="Run sweeps (sweeps/NAME.yaml or YAML paths) as Ray Tune "
                       "trials; results go to <storage>/<NAME>/ as Parquet (schema: docs/results.md).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="*", metavar="NAME", help="sweep name (see --list), path to a .yaml file, "
                   "or a shell pattern ('mog_*'); several run in one Ray session")
    p.add_argument("--list", action="store_true", help="name the sweeps, by world, with their hypotheses and exit")
    p.add_argument("--storage", default=None, metavar="PATH",
                   help=f"local path or URI pyarrow opens (s3://, gs://); default ${STORAGE_ENV}, else ./results")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fixed setting or replace a grid axis (repeatable; see below)")
    p.add_argument("--smoke", action="store_true",
                   help="shrink the sweep to seconds (2 seeds, short stages, <=2 values per axis)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the planned trials; run nothing")
    p.add_argument("--retry-failed", action="store_true", help="also re-run trials that finished with an error")
    p.add_argument("--plotly-js", choices=PLOTLY_JS, default="inline",
                   help="dashboards embed plotly.js (inline, one 5 MB file each) or share <storage>/plotly.min.js")
    tr = p.add_argument_group("experiment trackers (Ray Tune's logger callbacks; docs/sweeps.md)")
    tr.add_argument("--tracker", dest="trackers", action="append", default=[], choices=list(TRACKERS),
                    help="log every trial's config, metrics and learning curves (repeatable); W&B runs offline")
    tr.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, "
                    "else SQLite at <storage>/<NAME>/mlflow.db)")
    ray = p.add_argument_group("Ray")
    ray.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS as `ray job submit` "
                     "sets it, else a cluster `ray start` left on this machine, else an embedded one)")
    ray.add_argument("--max-concurrent", type=_positive(int), metavar="N", help="trials running at once")
    ray.add_argument("--cpus-per-trial", type=_positive(float), default=None, metavar="N",
                     help="CPUs reserved per trial (default 1 in the MoG world; none in the LLM world, whose "
                     "trials only drive Ray Train runs and Ray tasks that reserve their own)")
    ray.add_argument("--num-cpus", type=_positive(int), metavar="N",
                     help="start a fresh embedded cluster with N CPUs")
    ray.add_argument("--no-dashboard", action="store_true",
                     help="start a fresh embedded cluster without the Ray dashboard")
    return p


def _positive(kind: type):
    """argparse type: a number of `kind` (int or float) above zero, with a one-line complaint otherwise."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{v} must be {'>= 1' if kind is int else '> 0'}")
        return v
    return parse


def print_list() -> None:
    """Sweeps grouped by world (a file that does not parse is listed under `?` with its one-line error)."""
    by_world: dict[str, list[tuple[str, str]]] = {}
    for name, path in list_sweeps().items():
        try:
            world = load_spec(str(path)).world.name
        except SpecError as e:
            world = f"? ({e})"
        by_world.setdefault(world, []).append((name, hypothesis_of(path.read_text()) or "(no hypothesis line)"))
    width = max((len(n) for sweeps in by_world.values() for n, _ in sweeps), default=0)
    for world, sweeps in by_world.items():
        print(f"world {world}: {len(sweeps)} sweep(s)")
        for name, hypothesis in sweeps:
            print(f"  {name:<{width}}  {hypothesis}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): a return code, so callers need not catch
        return int(e.code or 0)
    if args.list:
        print_list()
        return 0
    if not args.sweeps:
        print(f"{PROG}: error: a sweep NAME is required; valid sweeps: {', '.join(list_sweeps())}", file=sys.stderr)
        return 2

    opts = RayOptions(address=args.address, num_cpus=args.num_cpus, dashboard=not args.no_dashboard,
                      cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent)
    trackers = Trackers(tuple(args.trackers), args.tracking_uri) if args.trackers else None
    try:
        outcomes = run(args.sweeps, args.sets, args.storage or default_storage(), args.smoke, args.retry_failed,
                       opts, trackers, dry_run=args.dry_run, plotly_js=args.plotly_js)
    except SweepError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    if args.dry_run:
        for prep in outcomes:
            if len(outcomes) > 1:
                print(f"# {prep.spec.name}")
            for t in prep.trials:
                print(t.trial_id, " ".join(f"{k}={v}" for k, v in t.params.items()))
            if prep.spec.search:
                print(f"search: {prep.spec.search.num_samples} samples over {', '.join(prep.spec.search.space)}")
        return 0
    return max(o.exit_code for o in outcomes)
