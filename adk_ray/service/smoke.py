"""`--smoke`: the same sweep shrunk to seconds, for tests and for trying a sweep file out.

The shape survives (every sub-grid, both pipelines, learning curves, at most two values per axis);
only sizes shrink, by the world's `SmokeRules` (service/worlds.py). `--set` is applied after this, so an
explicit override still wins.
"""
from __future__ import annotations

import dataclasses

from adk_ray.service.spec import SweepSpec, check_base

AXIS_VALUES = 2
"""Values kept per grid axis (the first ones)."""
NUM_SAMPLES = 2
"""Configs an Optuna search evaluates."""


def shrink(spec: SweepSpec) -> SweepSpec:
    rules = spec.world.smoke
    base = check_base(spec)
    fixed = {**spec.fixed, **rules.settings}
    for key, cap in rules.caps.items():
        if getattr(base, key):
            fixed[key] = min(getattr(base, key), cap)
    fixed["iterations"] = _iterations(base.iterations, rules.max_iterations)
    grid = tuple({k: _iterations(v, rules.max_iterations) if k == "iterations" else v[:AXIS_VALUES]
                  for k, v in sub.items()} for sub in spec.grid)
    search = spec.search and dataclasses.replace(spec.search, num_samples=min(spec.search.num_samples, NUM_SAMPLES))
    return dataclasses.replace(spec, fixed=fixed, grid=grid, seeds=spec.seeds[:rules.seeds], search=search, smoke=True)


def _iterations(values: tuple[int, ...], cap: int) -> tuple[int, ...]:
    capped = tuple(sorted({min(v, cap) for v in values[:AXIS_VALUES]}))
    if len(values) >= AXIS_VALUES and len(capped) < AXIS_VALUES:  # keep an iteration axis an axis
        return (cap // 2, cap)
    return capped
