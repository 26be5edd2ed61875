"""The paper's whole MoG half: every mog_* sweep in one command against one command per sweep, in one run.

  one command   `python -m adk_ray.sweep 'mog_*'`: one Ray start, the grid trials of every sweep in one
                Tuner (longest first; a config two sweeps plan runs once, the other copies its rows), the
                search in its own Tuner beside it, the storage's stage cache shared
  separate      `python -m adk_ray.sweep NAME` for each sweep in turn, each starting its own Ray (into one
                storage, as a user typing them would, so they share the stage cache too)

Both into fresh temporary storages, so nothing resumes. Printed per sweep: the separate command's wall
time, and in the one command the sum of the wall times of the trials it ran (`wall_seconds` rows; copies
not counted) and when its last trial finished (its last data file). The ratio is printed, never asserted;
the target is the one command under 3 minutes with 20 seeds per sweep (the sweeps' own seeds; --seeds N
overrides them).

    python benchmarks/mog_paper.py [--seeds 20] [--sweeps 'mog_*'] [--skip-separate]
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pyarrow.parquet as pq

from adk_ray.service.spec import expand_names

TARGET_S = 180.0


def sweep_command(names: list[str], storage: str, seeds: int | None) -> list[str]:
    return [sys.executable, "-m", "adk_ray.sweep", *names, "--storage", storage,
            *(["--set", f"seeds={seeds}"] if seeds else [])]


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall


def trial_seconds(results: str, ran: set[str]) -> tuple[float, int, int, float]:
    """(sum of the wall times of the trials this sweep ran, trial count, trials copied from another sweep,
    mtime of the last data file) of a results directory. A trial id already in `ran` was run by an earlier
    sweep of the command and copied here (runner._copies_last): its rows carry the original's wall time,
    which is counted once. `ran` gains this sweep's ids."""
    files = glob.glob(os.path.join(results, "data", "*.parquet"))
    walls = pd.concat([pq.read_table(f, columns=["trial_id", "wall_seconds"]).to_pandas() for f in files])
    per_trial = walls.groupby("trial_id")["wall_seconds"].first()
    copied = per_trial.index.isin(list(ran))
    ran.update(per_trial.index)
    return float(per_trial[~copied].sum()), len(per_trial), int(copied.sum()), max(os.path.getmtime(f) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweeps", default="mog_*", help="names or shell patterns, comma-separated")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per sweep (default: each sweep's own, 20)")
    ap.add_argument("--skip-separate", action="store_true", help="time only the one command")
    args = ap.parse_args()
    names = expand_names(args.sweeps.split(","))
    tmp = tempfile.mkdtemp(prefix="mog_paper_")
    # A private Ray temp dir: each command starts its own embedded Ray, never one left on this machine.
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    print(f"{len(names)} sweeps, seeds {args.seeds or 'as in each sweep'}; storages under {tmp}", flush=True)

    one_storage = os.path.join(tmp, "one")
    start = time.time()
    one = timed(sweep_command(names, one_storage, args.seeds), env)
    print(f"one command  {one:7.1f} s  (target < {TARGET_S:.0f} s: {'met' if one < TARGET_S else 'not met'})", flush=True)

    separate: dict[str, float] = {}
    if not args.skip_separate:
        for name in names:
            separate[name] = timed(sweep_command([name], os.path.join(tmp, "separate"), args.seeds), env)
            print(f"  separate {name:<24} {separate[name]:7.1f} s", flush=True)

    print(f"\n{'sweep':<24} {'trials':>6} {'copied':>6} {'separate s':>10} {'one: trial-s':>12} {'one: done at s':>14}")
    ran: set[str] = set()
    work = 0.0
    for name in names:  # the order the command gives them, so the first sweep of a shared trial ran it
        busy, n, copied, last = trial_seconds(os.path.join(one_storage, name), ran)
        work += busy
        sep = f"{separate[name]:10.1f}" if name in separate else f"{'-':>10}"
        print(f"{name:<24} {n:>6} {copied:>6} {sep} {busy:12.1f} {last - start:14.1f}")
    print(f"{'all':<24} {len(ran):>6} {'':>6} {'':>10} {work:12.1f}   (distinct trials; their wall times summed)")
    if separate:
        total = sum(separate.values())
        print(f"\n{len(names)} separate commands {total:7.1f} s; one command {one:7.1f} s; "
              f"ratio {total / one:.2f}x")


if __name__ == "__main__":
    main()
