"""`--set KEY=VALUE`: override one fixed setting, replace one grid axis, or set the seeds.

Semantics (docs/sweeps.md):
  * `seeds=N` runs seeds 0..N-1; `seeds=3,5` runs exactly seeds 3 and 5.
  * a KEY that is a grid axis: its values are replaced in every sub-grid that has it.
  * any other KEY with one value: a fixed setting (`iterations` may take a list there).
  * any other KEY with several comma-separated values: becomes an axis of every sub-grid.
"""
from __future__ import annotations

import dataclasses

from adk_ray.service.spec import SweepSpec, check_base, parse_seeds
from adk_ray.service.values import TUPLE_FIELDS, SpecError, check_key, coerce


def parse_set(text: str, config: type) -> tuple[str, list[str]]:
    """'beta=1.0,2.0' -> ('beta', ['1.0', '2.0'])."""
    key, eq, value = text.partition("=")
    key = key.strip()
    items = [v.strip() for v in value.split(",")]
    if not eq or not key or not value.strip() or any(not v for v in items):
        raise SpecError(f"--set {text!r}: expected KEY=VALUE or KEY=V1,V2,... (e.g. --set beta=1.0,2.0)")
    check_key(key, f"--set {text}", config)
    return key, items


def apply_sets(spec: SweepSpec, sets: list[str]) -> SweepSpec:
    for text in sets:
        key, items = parse_set(text, spec.world.config)
        spec = _apply_one(spec, key, items, f"--set {text}")
    check_base(spec)
    return spec


def _apply_one(spec: SweepSpec, key: str, items: list[str], where: str) -> SweepSpec:
    if key == "seeds":
        seeds = parse_seeds(items[0] if len(items) == 1 else items, f"{where}")
        return dataclasses.replace(spec, seeds=seeds)
    if spec.search and key in spec.search.space:
        raise SpecError(f"{where}: {key} is searched by this sweep; searched keys cannot be --set")
    typed = [coerce(key, v, where, spec.world.config) for v in items]
    if key in TUPLE_FIELDS:  # iterations: each item is one int
        typed = [v for t in typed for v in t]
    typed = tuple(dict.fromkeys(typed))
    if key in spec.axes():
        grid = tuple({**sub, key: typed} if key in sub else sub for sub in spec.grid)
        return dataclasses.replace(spec, grid=grid)
    if len(typed) == 1 or key in TUPLE_FIELDS:
        return dataclasses.replace(spec, fixed={**spec.fixed, key: typed if key in TUPLE_FIELDS else typed[0]})
    if spec.search:
        raise SpecError(f"{where}: a search sweep has no grid; give {key} one value")
    fixed = {k: v for k, v in spec.fixed.items() if k != key}
    grid = tuple({**sub, key: typed} for sub in (spec.grid or ({},)))
    return dataclasses.replace(spec, fixed=fixed, grid=grid)
