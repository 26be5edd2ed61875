"""What a Ray Tune trial costs before its world runs: N grid trials one after another on a 1-CPU local
Ray, each doing nothing, as `runner.run_grid` runs them (a fresh actor per trial) and with Tune's
`reuse_actors=True`; and the same fresh-actor trials importing what an adk_ray trial imports (torch,
the worlds). Each variant runs in its own subprocess with its own Ray; every figure is seconds per trial
(the first trial's start included), and the ratios are printed at the end.

    python benchmarks/trial_overhead.py [--trials 8]

Why it matters (#17): a sweep of many short trials on a small machine pays this per trial. A reused
actor keeps the name of the first trial it ran in the Ray dashboard, so a world with `warm_workers`
(service/worlds.py) reuses actors and runs each trial's world in a task named after the trial, on a
pooled worker that keeps its imports; other worlds keep a fresh actor per trial, named by its grid point.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "fresh actor, empty trial": ("0", "0"),
    "reused actor, empty trial": ("1", "0"),
    "fresh actor, adk_ray imports": ("0", "1"),
}


def one(trials: int, reuse: bool, imports: bool) -> float:
    """Seconds per trial of `trials` sequential grid trials (run in this process: call it in a subprocess)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    def trial(config):
        if imports:
            import adk_ray.pipeline.mog  # noqa: F401 - what a MoG trial imports: torch and the world
            import adk_ray.service.execute  # noqa: F401
        tune.report({"done": 1})

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    start = time.perf_counter()
    tune.Tuner(tune.with_resources(trial, {"cpu": 1}), param_space={"i": tune.grid_search(list(range(trials)))},
               tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse),
               run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0)).fit()
    per_trial = (time.perf_counter() - start) / trials
    ray.shutdown()
    return per_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # reuse imports: a subprocess's own variant
    args = ap.parse_args()
    if args.one:
        print(one(args.trials, args.one[0] == "1", args.one[1] == "1"))
        return
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rto", dir="/tmp"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    got = {}
    for name, flags in VARIANTS.items():
        out = subprocess.run([sys.executable, __file__, "--trials", str(args.trials), "--one", *flags], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        got[name] = float(out[-1])
        print(f"{name:30s} {got[name]:6.2f} s per trial ({args.trials} trials in sequence)", flush=True)
    fresh, reused, imports = got.values()
    print(f"fresh / reused actor        = {fresh / reused:5.1f}x")
    print(f"adk_ray imports per trial   = {imports - fresh:5.2f} s of {imports:.2f} s")


if __name__ == "__main__":
    main()
