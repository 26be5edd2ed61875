"""CPU time of one step of each MoG aligner, of the SFT/KD fit and of the PAD KD fits, at a sweep's batch shape.

T = 2 × seeds runs (both pipelines), batch 256, π_ref = p' after 600 SFT steps (narrow components, as
in a sweep: a fresh initialisation would hide the slow paths of far components). Each figure is the
best of 5 blocks of `--steps` / 5 steps, in `time.process_time` (CPU time, so a shared machine's load
inflates it less than wall time). `--base DIR` runs the same measurement on another checkout in a
subprocess and prints both, with the ratio: `--rounds` times each, alternating, the best of each kept.

    python benchmarks/mog_step_cost.py [--seeds 20] [--steps 300] [--base DIR [--rounds 3]]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from adk_ray.worlds.mog import model, stages, truth
from adk_ray.worlds.mog.aligners import ALIGNERS, AlignSettings, Run
from adk_ray.worlds.mog.config import MoGTrialConfig
from adk_ray.worlds.mog.kd_methods import KD_METHODS
from adk_ray.worlds.mog.slices import slice_of

STEPS = ("ppo", "grpo", "dpo_online", "dpo_offline", "ipo_online")


def measure(n_seeds: int, n_steps: int) -> dict[str, float]:
    """ms of CPU per step, by step name."""
    torch.set_num_threads(1)
    seeds = list(range(n_seeds)) * 2
    cfg = MoGTrialConfig()
    geometry = AlignSettings.of(cfg).geometry
    p_prime = stages.sft(list(range(n_seeds)), stages.FitSettings(6, 600, cfg.lr, cfg.batch_size), geometry)
    ref = model.index(p_prime, seeds)
    out = {}
    for algo in STEPS:
        settings = AlignSettings.of(cfg.replace(algorithm=algo))
        policy = model.trainable(ref)
        # every field some version of Run has; this one takes those it declares (so --base works)
        fields = dict(policy=lambda: policy, ref=lambda: model.detach(ref),
                      ref_coef=lambda: model.coefficients(ref),
                      opt=lambda: stages.adam(policy.values(), cfg.lr), seeds=lambda: seeds,
                      beta=lambda: torch.ones(len(seeds), 1), reward=lambda: truth.Reward(geometry),
                      batch_size=lambda: cfg.batch_size, lr=lambda: cfg.lr)
        run = Run(**{k: make() for k, make in fields.items() if k in Run.__dataclass_fields__})
        out[algo] = _best(ALIGNERS[algo].start(settings.method, run).step, n_steps)
    # a seqkd stage's step (the final KD of A-K: p'' fitted to samples of the frozen teacher), timed as
    # whole short stages like PAD's below
    fit = stages.FitSettings(cfg.n_final_modes, max(1, n_steps // 5), cfg.lr, cfg.batch_size)
    fit_stage = lambda: stages.fit_to_samples(ref, ref["logits"], seeds, fit, "bench")  # noqa: E731
    out["sft/kd fit"] = _best(fit_stage, 5) / fit.iterations
    for method in ("pad_vpd", "pad_ppd"):  # a PAD KD stage's step, timed as whole short stages
        kd = KD_METHODS[method]
        settings = slice_of(kd.settings, cfg.replace(kd_iterations=max(1, n_steps // 5)))
        out[f"{method} fit"] = _best(lambda: kd.distill(ref, torch.full((len(seeds),), cfg.kd_beta), seeds,
                                                        settings), 5) / settings.iterations
    return out


def _best(fn, n: int) -> float:
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(n // 5):
            fn()
        best = min(best, (time.process_time() - t) / (n // 5) * 1e3)
    return best


def _best_of(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: min(a.get(k, v), v) for k, v in b.items()}


def _measure_in(checkout: str, n_seeds: int, n_steps: int) -> dict[str, float]:
    """`measure` on another checkout, in a subprocess that imports its code."""
    code = os.path.abspath(checkout)
    cmd = [sys.executable, os.path.abspath(__file__), "--seeds", str(n_seeds), "--steps", str(n_steps), "--json"]
    proc = subprocess.run(cmd, cwd=code, env={**os.environ, "PYTHONPATH": code}, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} (in {code}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--base", help="another checkout, measured the same way in a subprocess")
    ap.add_argument("--rounds", type=int, default=3, help="with --base: measurements of each, alternating")
    ap.add_argument("--json", action="store_true", help="print one JSON object (what --base reads)")
    args = ap.parse_args()
    if args.json:
        print(json.dumps(measure(args.seeds, args.steps)))
        return
    # this checkout and the base in alternation, the best of each kept: a shared machine's slow spells
    # then fall on both, not on whichever ran second
    here, base = {}, None
    for _ in range(args.rounds if args.base else 1):
        here = _best_of(here, measure(args.seeds, args.steps))
        if args.base:
            base = _best_of(base or {}, _measure_in(args.base, args.seeds, args.steps))
    print(f"ms of CPU per step, T = {2 * args.seeds} runs, batch 256")
    for name, ms in here.items():
        extra = f"   base {base[name]:7.3f}   base / this {base[name] / ms:5.2f}×" if base else ""
        print(f"  {name:12s} {ms:7.3f}{extra}")


if __name__ == "__main__":
    main()
