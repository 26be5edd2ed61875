"""One paper figure in the MoG world, batched against a per-seed loop, printed as a ratio in one run.

The figure: one algorithm, both pipelines, β ∈ {0.05, 0.1, 0.3, 0.5, 1.0, 2.0} at 300 iterations and
iterations ∈ {100, 300, 500, 1000, 2000, 3000} at β = 1.0, 20 seeds (paper Fig. 3).
  batched   all seeds and grid points in one `run_batch` (the stage cache fits p', p'' once per seed)
  per-trial one `run_trial` per β, seeds batched (what a Tune trial of the sweep service runs)
  per-seed  the same code with one seed and one setting at a time, no cache shared between settings;
            timed on a few (seed, setting) pairs and extrapolated, since the full loop takes most of an hour

    python benchmarks/mog_batched_vs_per_seed.py [--algorithm ppo] [--seeds 20] [--per-seed-samples 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from adk_ray.pipeline.cache import StageCache
from adk_ray.pipeline.mog import run_batch, run_trial
from adk_ray.worlds.mog.config import MoGTrialConfig

BETAS = (0.05, 0.1, 0.3, 0.5, 1.0, 2.0)
ITERS = (100, 300, 500, 1000, 2000, 3000)


def figure_configs(algorithm: str, n_seeds: int) -> list[MoGTrialConfig]:
    seeds = tuple(range(n_seeds))
    return [MoGTrialConfig(algorithm=algorithm, beta=b, seeds=seeds,
                           iterations=ITERS + (300,) if b == 1.0 else (300,)) for b in BETAS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithm", default="ppo")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--per-seed-samples", type=int, default=2, help="(seed, setting) pairs timed for the per-seed loop")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfgs = figure_configs(args.algorithm, args.seeds)
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
    total_work = sum(it for _, it in settings)
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
    print(f"\nratio per-seed / batched   = {per_seed / batched:6.1f}×")
    print(f"ratio per-seed / per-trial = {per_seed / per_trial:6.1f}×")
    print(f"seeds·settings per second: batched {args.seeds * len(settings) / batched:.2f}, "
          f"per-seed {args.seeds * len(settings) / per_seed:.3f}")


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
