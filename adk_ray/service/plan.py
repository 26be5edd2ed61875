"""From a sweep's grid to its Tune trials.

The MoG world batches all seeds and all iteration counts of one setting into one call, so a trial is
one grid point *without* `seeds` and `iterations`. Points of different sub-grids that agree on every
other field are one trial whose iteration list is the union: (β=1.0, 300) of a β sweep and
(β=1.0, 100..3000) of an iteration sweep cost one run of 3000 steps, not two.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass

from adk_ray.service.spec import SweepSpec
from adk_ray.service.values import SpecError
from adk_ray.service.worlds import TrialConfig


@dataclass(frozen=True)
class PlannedTrial:
    """One Tune trial of a grid sweep."""

    trial_id: str
    """Short stable hash of the config JSON: the resume key and the data file's name."""
    config: TrialConfig
    """The full config, with every seed and iteration count the trial batches."""
    params: dict
    """The grid axes' values at this point (plus iterations), for display."""


def config_json(cfg: TrialConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def trial_id_of(cfg: TrialConfig) -> str:
    return hashlib.sha1(config_json(cfg).encode()).hexdigest()[:12]


def plan_trials(spec: SweepSpec) -> list[PlannedTrial]:
    """The grid's trials in order of first appearance; raises SpecError for any invalid point.

    Points merge when their *full* configs (defaults included) agree apart from `iterations`, so a
    sub-grid that spells out a default value still lands on the same trial as one that omits it.
    """
    cls = spec.world.config
    base_iterations = spec.fixed.get("iterations", cls.iterations)
    fixed = {k: v for k, v in spec.fixed.items() if k != "iterations"}
    points: dict[str, tuple[TrialConfig, dict, set]] = {}
    for sub in spec.grid or ({},):
        axes = {k: v for k, v in sub.items() if k != "iterations"}
        iterations = sub.get("iterations", base_iterations)
        for combo in itertools.product(*axes.values()):
            params = dict(zip(axes, combo))
            try:
                cfg = cls.from_dict({**fixed, **params, "iterations": iterations, "seeds": spec.seeds})
            except (ValueError, TypeError) as e:
                at = ", ".join(f"{k}={v}" for k, v in params.items()) or "fixed settings"
                raise SpecError(f"{spec.path}: grid point {at}: {e}") from None
            key = config_json(cfg.replace(iterations=(1,)))
            entry = points.setdefault(key, (cfg, {}, set()))
            entry[1].update(params)
            entry[2].update(cfg.iterations)
    trials = []
    for cfg, params, iterations in points.values():
        cfg = cfg.replace(iterations=tuple(sorted(iterations)))
        trials.append(PlannedTrial(trial_id_of(cfg), cfg, {**params, "iterations": list(cfg.iterations)}))
    return trials


def check_search(spec: SweepSpec) -> None:
    """Both ends (or every choice) of each searched range must make a valid config."""
    for key, r in spec.search.space.items():
        for v in r.choices or (r.low, r.high):
            try:
                spec.world.config.from_dict({**spec.fixed, key: v, "seeds": spec.seeds})
            except (ValueError, TypeError) as e:
                raise SpecError(f"{spec.path}: search.space.{key} = {v}: {e}") from None
