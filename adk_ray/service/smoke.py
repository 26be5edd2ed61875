"""`--smoke`: the same sweep shrunk to seconds, for tests and for trying a sweep file out.

The shape survives (every sub-grid, both pipelines, learning curves, at most two values per axis);
only sizes shrink. `--set` is applied after this, so an explicit override still wins.
"""
from __future__ import annotations

import dataclasses

from adk_ray.service.spec import SweepSpec, check_base

SEEDS = 2
STAGE_ITERATIONS = 60
"""Cap on sft_iterations and kd_iterations."""
MAX_ITERATIONS = 30
"""Cap on alignment iterations; an iteration axis becomes (MAX_ITERATIONS // 2, MAX_ITERATIONS)."""
EVAL_SAMPLES = 512
EVAL_EVERY = 10
"""Curve interval when the sweep draws curves at all (so a 30-step run still has some)."""
OFFLINE_PAIRS = 512
AXIS_VALUES = 2
NUM_SAMPLES = 2
"""Configs an Optuna search evaluates."""


LLM_ITERATIONS = 8
"""Cap on LLM alignment iterations (the tiny preset's models move within a few)."""
LLM_SEEDS = 1
LLM_CHECKPOINT_EVERY = 2


def shrink(spec: SweepSpec) -> SweepSpec:
    if spec.world == "llm":
        return _shrink_llm(spec)
    base = check_base(spec)
    fixed = dict(spec.fixed)
    fixed["sft_iterations"] = min(base.sft_iterations, STAGE_ITERATIONS)
    fixed["kd_iterations"] = min(base.kd_iterations, STAGE_ITERATIONS)
    fixed["eval_samples"] = min(base.eval_samples, EVAL_SAMPLES)
    fixed["dpo_offline_pairs"] = min(base.dpo_offline_pairs, OFFLINE_PAIRS)
    if base.eval_every:
        fixed["eval_every"] = min(base.eval_every, EVAL_EVERY)
    fixed["iterations"] = _iterations(base.iterations)
    grid = tuple({k: _iterations(v) if k == "iterations" else v[:AXIS_VALUES] for k, v in sub.items()}
                 for sub in spec.grid)
    search = spec.search and dataclasses.replace(spec.search, num_samples=min(spec.search.num_samples, NUM_SAMPLES))
    return dataclasses.replace(spec, fixed=fixed, grid=grid, seeds=spec.seeds[:SEEDS], search=search, smoke=True)


def _iterations(values: tuple[int, ...]) -> tuple[int, ...]:
    capped = tuple(sorted({min(v, MAX_ITERATIONS) for v in values[:AXIS_VALUES]}))
    if len(values) >= AXIS_VALUES and len(capped) < AXIS_VALUES:  # keep an iteration axis an axis
        return (MAX_ITERATIONS // 2, MAX_ITERATIONS)
    return capped


def _shrink_llm(spec: SweepSpec) -> SweepSpec:
    """The LLM world on the tiny preset (synthetic language, CPU; its own data sizes, so a smoke run shares
    p', p'' and p_target with any other tiny-preset run of the same storage), one seed and a few
    alignment iterations; every stage of both pipelines still runs, on Ray Train + DeepSpeed."""
    base = check_base(spec)
    fixed = {**spec.fixed, "preset": "tiny", "train_samples": 0, "eval_samples": 0,
             "checkpoint_every": LLM_CHECKPOINT_EVERY,
             "iterations": tuple(sorted({min(v, LLM_ITERATIONS) for v in base.iterations[:AXIS_VALUES]}))}

    def axis(key, values):
        if key == "iterations":
            return tuple(sorted({min(v, LLM_ITERATIONS) for v in values[:AXIS_VALUES]}))
        return values[:AXIS_VALUES]
    grid = tuple({k: axis(k, v) for k, v in sub.items()} for sub in spec.grid)
    return dataclasses.replace(spec, fixed=fixed, grid=grid, seeds=spec.seeds[:LLM_SEEDS], smoke=True)
