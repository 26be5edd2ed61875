"""One paper figure in the MoG world, batched against a per-seed loop, printed as a ratio in one run.

The figure: one algorithm, both pipelines, β ∈ {0.05, 0.1, 0.3, 0.5, 1.0, 2.0} at 300 iterations and
iterations ∈ {100, 300, 500, 1000, 2000, 3000} at β = 1.0, 20 seeds (paper Fig. 3).
  sweep     `python -m adk_ray.sweep mog_<algorithm>` in a subprocess, fresh storage, Ray's start
            included: what a user waits for; with a timeline of its trials (start and end, from each
            data file's time and the trial's own wall time) and how busy it kept the CPUs
  batched   all seeds and grid points in one `run_batch` (the stage cache fits p', p'' once per seed)
  per-trial one `run_trial` per β, seeds batched (what a Tune trial of the sweep service runs)
  per-seed  the same code with one seed and one setting at a time, no cache shared between settings;
            timed on a few (seed, setting) pairs and extrapolated, since the full loop takes most of an hour
`--base DIR` also runs the sweep from another checkout (e.g. `git worktree add /tmp/base <commit>`) for
before/after figures in the same run. Targets are printed, never asserted: the sweep ≥ 50× the per-seed loop.

    python benchmarks/mog_batched_vs_per_seed.py [--algorithm ppo] [--seeds 20] [--per-seed-samples 2]
        [--base DIR] [--skip-in-process]
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

import torch

from adk_ray.pipeline.cache import StageCache
from adk_ray.pipeline.mog import run_batch, run_trial
from adk_ray.worlds.mog.config import MoGTrialConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = {"ppo": "mog_ppo", "grpo": "mog_grpo", "dpo_online": "mog_dpo", "dpo_offline": "mog_dpo_offline",
          "ipo_online": "mog_ipo"}
"""The sweep file that draws each algorithm's figure."""
TARGET = 50.0  # the sweep against the per-seed loop, printed as met or not, never asserted
BETAS = (0.05, 0.1, 0.3, 0.5, 1.0, 2.0)
ITERS = (100, 300, 500, 1000, 2000, 3000)


def figure_configs(algorithm: str, n_seeds: int) -> list[MoGTrialConfig]:
    seeds = tuple(range(n_seeds))
    return [MoGTrialConfig(algorithm=algorithm, beta=b, seeds=seeds,
                           iterations=ITERS + (300,) if b == 1.0 else (300,)) for b in BETAS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithm", default="ppo", choices=sorted(SWEEPS))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--per-seed-samples", type=int, default=2, help="(seed, setting) pairs timed for the per-seed loop")
    ap.add_argument("--base", help="another checkout whose sweep is timed too (before/after in one run)")
    ap.add_argument("--skip-in-process", action="store_true", help="skip the batched and per-trial runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfgs = figure_configs(args.algorithm, args.seeds)
    sweep = SWEEPS[args.algorithm]

    sweeps = {"sweep": time_sweep(REPO, sweep, args.seeds)}
    if args.base:
        sweeps["sweep (base)"] = time_sweep(os.path.abspath(args.base), sweep, args.seeds)

    batched = per_trial = None
    if not args.skip_in_process:
        run_trial(MoGTrialConfig(seeds=(0,), iterations=(2,), sft_iterations=2, kd_iterations=2))  # imports, warm-up
        t = time.perf_counter()
        res = run_batch(cfgs)
        batched = time.perf_counter() - t
        n_final = sum(r["stage"] == "final" for r in res.rows)
        print(f"batched    {batched:7.1f} s  ({n_final} final models, {n_final / batched:.1f} models/s)", flush=True)

        t = time.perf_counter()
        cache = StageCache()
        for c in cfgs:
            run_batch([c], cache)
        per_trial = time.perf_counter() - t
        print(f"per-trial  {per_trial:7.1f} s  (one call per β, seeds batched, shared cache)", flush=True)

    # Per-seed: settings are (β, iteration count); each run fits its own p', p'' like a naive loop would.
    settings = [(c.beta, it) for c in cfgs for it in c.iterations]
    settings = list(dict.fromkeys(settings))
    sampled, sampled_work = 0.0, 0
    for k in range(args.per_seed_samples):
        beta, it = settings[k % len(settings)] if k % 2 == 0 else (1.0, 3000)
        t = time.perf_counter()
        run_trial(MoGTrialConfig(algorithm=args.algorithm, beta=beta, seeds=(k,), iterations=(it,)))
        dt = time.perf_counter() - t
        print(f"per-seed   {dt:7.1f} s  for seed {k}, β={beta}, {it} iterations", flush=True)
        sampled += dt
        sampled_work += it
    # Cost per seed-setting = fixed part (SFT + 2 KD) + alignment ∝ iterations; fit both from the samples.
    fixed_and_rate = _fit_cost(args, sampled, sampled_work)
    per_seed = args.seeds * sum(fixed_and_rate[0] + fixed_and_rate[1] * it for _, it in settings)
    print(f"per-seed   {per_seed:7.1f} s  extrapolated: {args.seeds} seeds × {len(settings)} settings "
          f"(~{fixed_and_rate[0]:.1f} s fixed + {fixed_and_rate[1] * 1e3:.2f} ms/iteration each)")
    print()
    for name, wall in sweeps.items():
        met = "met" if per_seed / wall >= TARGET else "not met"
        print(f"ratio per-seed / {name:12s} = {per_seed / wall:6.1f}×  (target ≥ {TARGET:g}×: {met})")
    if args.base:
        print(f"ratio sweep (base) / sweep   = {sweeps['sweep (base)'] / sweeps['sweep']:6.2f}×")
    if batched:
        print(f"ratio per-seed / batched     = {per_seed / batched:6.1f}×")
        print(f"ratio per-seed / per-trial   = {per_seed / per_trial:6.1f}×")
        print(f"seeds·settings per second: batched {args.seeds * len(settings) / batched:.2f}, "
              f"per-seed {args.seeds * len(settings) / per_seed:.3f}")


def time_sweep(code: str, sweep: str, n_seeds: int) -> float:
    """Wall time of `python -m adk_ray.sweep <sweep>` run from checkout `code` into fresh storage, with
    its trials' timeline printed; a fresh embedded Ray cluster of all this machine's CPUs (--num-cpus)."""
    storage = tempfile.mkdtemp(prefix="adk_ray_bench_")
    cpus = os.cpu_count() or 1
    cmd = [sys.executable, "-m", "adk_ray.sweep", sweep, "--storage", storage,
           "--num-cpus", str(cpus), "--set", f"seeds={n_seeds}"]
    env = {**os.environ, "PYTHONPATH": code}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} (in {code}) failed:\n{proc.stderr[-3000:]}")
    label = "this checkout" if code == REPO else code
    print(f"sweep      {wall:7.1f} s  {sweep}, {n_seeds} seeds, {label}: `{' '.join(cmd[1:])}`", flush=True)
    print_timeline(os.path.join(storage, sweep, "data"), t0, wall, cpus)
    return wall


def print_timeline(data_dir: str, t0: float, wall: float, cpus: int) -> None:
    """Each trial's start and end relative to the command's start: its data file's time is its end, its own
    wall_seconds back from there its start. Busy = trial time / (CPUs × the span the trials cover)."""
    trials = []
    for path in glob.glob(os.path.join(data_dir, "*.parquet")):
        t = pq.read_table(path, columns=["trial_id", "beta", "iterations", "wall_seconds"]).to_pylist()
        end = os.path.getmtime(path) - t0
        trials.append((end - t[0]["wall_seconds"], end, t[0]["trial_id"], t[0]["beta"],
                       max(r["iterations"] or 0 for r in t)))
    trials.sort()
    width = 60
    for start, end, tid, beta, its in trials:
        a, b = int(start / wall * width), max(int(end / wall * width), int(start / wall * width) + 1)
        print(f"  {tid}  β={beta:<5g} ≤{its:<5d} {start:6.1f} → {end:6.1f} s  |{' ' * a}{'█' * (b - a)}"
              f"{' ' * (width - b)}|")
    if trials:
        first, last = trials[0][0], max(t[1] for t in trials)
        busy = sum(e - s for s, e, *_ in trials) / (cpus * (last - first))
        print(f"  trials from {first:.1f} s to {last:.1f} s of {wall:.1f} s; CPUs busy {busy:.0%} of that span "
              f"({cpus} CPUs); before the first trial: Ray's start and the planning", flush=True)


def _fit_cost(args, sampled_seconds: float, sampled_iterations: int) -> tuple[float, float]:
    """Split a per-seed run into fixed cost and cost per alignment iteration, from two extra short runs."""
    times = {}
    for it in (10, 400):
        t = time.perf_counter()
        run_trial(MoGTrialConfig(algorithm=args.algorithm, seeds=(99,), iterations=(it,)))
        times[it] = time.perf_counter() - t
    rate = max((times[400] - times[10]) / 390, 0.0)
    fixed = max(times[10] - 10 * rate, 0.0)
    # Scale to agree with the directly timed samples (same machine, same code).
    scale = sampled_seconds / (args.per_seed_samples * fixed + rate * sampled_iterations)
    return fixed * scale, rate * scale


if __name__ == "__main__":
    main()
