"""A sweep file (sweeps/NAME.yaml) read, typed and checked; the format is documented in docs/sweeps.md.

Everything a sweep could get wrong is caught here or in the planner, before Ray starts or a byte is
written, and reported as one SpecError line that names the problem and the valid choices.
"""
from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from adk_ray.columns import METRICS

from adk_ray.service.values import SpecError, check_key, coerce, int_tuple
from adk_ray.service.worlds import DEFAULT_WORLD, TrialConfig, World, world_named

TOP_KEYS = ("world", "fixed", "grid", "seeds", "group_by", "search")
SEARCH_KEYS = ("kind", "metric", "mode", "num_samples", "space", "constraint", "seed", "pipeline")
DEFAULT_SEEDS = 20


@dataclass(frozen=True)
class Constraint:
    """`METRIC OP NUMBER`, e.g. `overall_recall >= -3.0`, on the objective's per-trial median."""

    metric: str
    """One of METRICS."""
    op: str
    """'>=', '>', '<=' or '<'."""
    bound: float
    """The number the metric is compared with."""

    def violation(self, value: float) -> float:
        """How far `value` is outside the constraint; <= 0 means satisfied (Optuna's convention)."""
        return self.bound - value if self.op in (">=", ">") else value - self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound}"


@dataclass(frozen=True)
class ParamRange:
    """The search range of one config field: a numeric interval or a list of choices."""

    low: float | int | None = None
    """Lower end of the interval (inclusive)."""
    high: float | int | None = None
    """Upper end of the interval (inclusive)."""
    log: bool = False
    """Sample the interval on a log scale."""
    choices: tuple | None = None
    """Discrete values to choose from (instead of low/high)."""


@dataclass(frozen=True)
class SearchSpec:
    """A non-grid sweep: Ray Tune's OptunaSearch proposes configs, one Tune trial each."""

    metric: str
    """Objective: the median across seeds of this metric over the final rows of `pipeline`."""
    mode: str
    """'max' or 'min'."""
    num_samples: int
    """Number of configs to evaluate (finished ones count on a resume)."""
    space: dict[str, ParamRange]
    """Searched config fields; every other field comes from `fixed`."""
    constraint: Constraint | None = None
    """Feasibility condition, handed to Optuna's constrained TPE (infeasible trials rank last)."""
    seed: int = 0
    """Seed of the TPE sampler, so a rerun proposes the same configs."""
    pipeline: str = "A-K"
    """Pipeline whose final models the objective reads."""
    kind: str = "optuna"
    """The only searcher wired in."""


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: a hypothesis, fixed settings and a grid (or a search) over the world's trial-config fields."""

    name: str
    """Sweep name; results go to <storage>/<name>/."""
    path: str
    """The YAML file it came from."""
    hypothesis: str
    """The file's first-line comment."""
    world: World
    """Which world runs the trials (the sweep file's `world:`, looked up in WORLDS)."""
    fixed: dict = field(default_factory=dict)
    """Field -> value held by every trial (on top of the trial config's defaults)."""
    grid: tuple[dict, ...] = ()
    """Sub-grids, each field -> tuple of values; a sub-grid is a cartesian product, the sweep their union."""
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    """Seeds every trial runs (batched inside the trial)."""
    group_by: tuple[str, ...] = ()
    """Axes the dashboard draws, one section each."""
    search: SearchSpec | None = None
    """Set for an Optuna search sweep (then `grid` is empty)."""
    smoke: bool = False
    """Shrunk by --smoke."""

    def axes(self) -> list[str]:
        """Fields that vary in some sub-grid, in order of first appearance."""
        return list(dict.fromkeys(k for sub in self.grid for k in sub))


# ---------------------------------------------------------------------------------------------- files

def sweep_dirs() -> list[Path]:
    """Where sweep names are looked up: $ADK_RAY_SWEEPS_DIR, else ./sweeps and the checkout's sweeps/."""
    if os.environ.get("ADK_RAY_SWEEPS_DIR"):
        return [Path(os.environ["ADK_RAY_SWEEPS_DIR"])]
    dirs = [Path.cwd() / "sweeps", Path(__file__).resolve().parents[2] / "sweeps"]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in [e.resolve() for e in dirs[:i]]]


def list_sweeps() -> dict[str, Path]:
    """Sweep name -> file, earlier directories winning."""
    found: dict[str, Path] = {}
    for d in sweep_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def resolve(name_or_path: str) -> Path:
    """A sweep name (sweeps/NAME.yaml) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if p.is_file():
            return p
        raise SpecError(f"sweep file {name_or_path} does not exist")
    known = list_sweeps()
    if name_or_path in known:
        return known[name_or_path]
    raise SpecError(f"unknown sweep {name_or_path!r}; valid sweeps: {', '.join(known) or '(none found)'}"
                    " (or pass a path to a .yaml file)")


def expand_names(names: list[str]) -> list[str]:
    """Sweep names and paths with shell-style patterns (`'mog_*'`) replaced by the sweeps they match,
    in order, each once; a pattern that matches no sweep is a SpecError naming the valid ones."""
    out: list[str] = []
    for name in names:
        if any(c in name for c in "*?[") and not Path(name).suffix:
            known = list_sweeps()
            matched = fnmatch.filter(known, name)
            if not matched:
                raise SpecError(f"no sweep matches {name!r}; valid sweeps: {', '.join(known) or '(none found)'}")
            out.extend(matched)
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def hypothesis_of(text: str) -> str:
    """The first line's `# ` comment, without the `#`."""
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    return first[1:].strip() if first.startswith("#") else ""


def load_spec(name_or_path: str) -> SweepSpec:
    path = resolve(name_or_path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read sweep file {path}: {e.strerror}") from None
    return parse_spec(text, name=path.stem, path=str(path))


# ---------------------------------------------------------------------------------------------- parsing

def parse_spec(text: str, name: str, path: str) -> SweepSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: malformed YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a sweep file is a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; valid keys: {', '.join(TOP_KEYS)}")
    hypothesis = hypothesis_of(text)
    if not hypothesis:
        raise SpecError(f"{path}: the first line must be a '# Hypothesis: ...' comment")

    try:
        world = world_named(data.get("world", DEFAULT_WORLD))
    except ValueError as e:
        raise SpecError(f"{path}: {e}") from None
    fixed = _parse_fixed(data.get("fixed") or {}, path, world.config)
    grid = _parse_grid(data.get("grid"), path, world.config)
    seeds = parse_seeds(data.get("seeds", DEFAULT_SEEDS), path)
    search = _parse_search(data["search"], path, world.config) if data.get("search") is not None else None
    if search and grid:
        raise SpecError(f"{path}: a sweep has either a grid or a search, not both")
    if search:
        clash = sorted(set(search.space) & set(fixed))
        if clash:
            raise SpecError(f"{path}: {', '.join(clash)} is both fixed and searched")
    axes = list(dict.fromkeys(k for sub in grid for k in sub))
    group_by = data.get("group_by", axes or (list(search.space) if search else []))
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list):
        raise SpecError(f"{path}: group_by must be a list of config fields")
    for g in group_by:
        check_key(str(g), f"{path}: group_by", world.config)
    spec = SweepSpec(name=name, path=path, hypothesis=hypothesis, world=world, fixed=fixed, grid=grid,
                     seeds=seeds, group_by=tuple(group_by), search=search)
    check_base(spec)
    return spec


def check_base(spec: SweepSpec) -> TrialConfig:
    """The fixed settings alone must make a valid config (grid points are checked by the planner)."""
    try:
        return spec.world.config.from_dict({**spec.fixed, "seeds": spec.seeds})
    except (ValueError, TypeError) as e:
        raise SpecError(f"{spec.path}: fixed: {e}") from None


def parse_seeds(value, where: str) -> tuple[int, ...]:
    """`N` means seeds 0..N-1; a list names the seeds. `where` prefixes error messages."""
    if isinstance(value, (list, tuple)):
        seeds = int_tuple("seeds", list(value), where)
        if not seeds:
            raise SpecError(f"{where}: seeds: the list of seeds is empty")
        if min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise SpecError(f"{where}: seeds must be distinct non-negative integers, got {list(seeds)}")
        return seeds
    (n,) = int_tuple("seeds", value, where)
    if n < 1:
        raise SpecError(f"{where}: seeds: the number of seeds must be >= 1, got {n}")
    return tuple(range(n))


def _parse_fixed(fixed, path: str, config: type) -> dict:
    if not isinstance(fixed, dict):
        raise SpecError(f"{path}: fixed must be a mapping of config fields to values")
    if "seeds" in fixed:
        raise SpecError(f"{path}: fixed: seeds is a top-level key (seeds: N or seeds: [list])")
    return {k: coerce(k, v, f"{path}: fixed", config) for k, v in fixed.items()}


def _parse_grid(grid, path: str, config: type) -> tuple[dict, ...]:
    if grid is None:
        return ()
    subs = [grid] if isinstance(grid, dict) else grid
    if not isinstance(subs, list):
        raise SpecError(f"{path}: grid must be a list of sub-grids (mappings of field -> list of values)")
    out = []
    for i, sub in enumerate(subs):
        where = f"{path}: grid[{i}]"
        if not isinstance(sub, dict) or not sub:
            raise SpecError(f"{where}: a sub-grid is a non-empty mapping of config fields to lists of values")
        axes = {}
        for key, values in sub.items():
            if key == "seeds":
                raise SpecError(f"{where}: seeds is a top-level key, not a grid axis")
            values = values if isinstance(values, list) else [values]
            if not values:
                raise SpecError(f"{where}: axis {key} has no values")
            typed = [coerce(key, v, where, config) for v in values]
            if key == "iterations":  # each value is itself an int here; the trial holds the tuple
                typed = [v for t in typed for v in t]
            axes[key] = tuple(dict.fromkeys(typed))
        out.append(axes)
    return tuple(out)


def _parse_search(s, path: str, config: type) -> SearchSpec:
    where = f"{path}: search"
    if not isinstance(s, dict):
        raise SpecError(f"{where}: must be a mapping with keys {', '.join(SEARCH_KEYS)}")
    unknown = sorted(set(s) - set(SEARCH_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(SEARCH_KEYS)}")
    if s.get("kind", "optuna") != "optuna":
        raise SpecError(f"{where}: kind {s.get('kind')!r} is not supported; valid kinds: optuna")
    metric = s.get("metric")
    if metric not in METRICS:
        raise SpecError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
    mode = s.get("mode", "max")
    if mode not in ("max", "min"):
        raise SpecError(f"{where}: mode {mode!r} is not one of max, min")
    n = s.get("num_samples")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SpecError(f"{where}: num_samples must be a positive integer, got {n!r}")
    pipeline = s.get("pipeline", "A-K")
    if pipeline not in ("A-K", "K-A"):
        raise SpecError(f"{where}: pipeline {pipeline!r} is not one of A-K, K-A")
    space_in = s.get("space")
    if not isinstance(space_in, dict) or not space_in:
        raise SpecError(f"{where}: space must map config fields to {{low, high[, log]}} or {{choices: [...]}}")
    space = {key: _parse_range(key, r, f"{where}.space", config) for key, r in space_in.items()}
    constraint = parse_constraint(s["constraint"], where) if s.get("constraint") else None
    seed = s.get("seed", 0)
    if not isinstance(seed, int):
        raise SpecError(f"{where}: seed must be an integer, got {seed!r}")
    return SearchSpec(metric=metric, mode=mode, num_samples=n, space=space, constraint=constraint,
                      seed=seed, pipeline=pipeline)


def _parse_range(key: str, r, where: str, config: type) -> ParamRange:
    check_key(key, where, config)
    if key in ("seeds", "iterations"):
        raise SpecError(f"{where}: {key} cannot be searched (it is batched inside each trial)")
    if not isinstance(r, dict):
        raise SpecError(f"{where}.{key}: give {{low, high[, log]}} or {{choices: [...]}}")
    if "choices" in r:
        if set(r) != {"choices"} or not isinstance(r["choices"], list) or not r["choices"]:
            raise SpecError(f"{where}.{key}: choices must be a non-empty list (and alone)")
        return ParamRange(choices=tuple(coerce(key, c, where, config) for c in r["choices"]))
    extra = sorted(set(r) - {"low", "high", "log"})
    if extra or "low" not in r or "high" not in r:
        raise SpecError(f"{where}.{key}: give low and high (and optionally log: true)")
    low, high = coerce(key, r["low"], where, config), coerce(key, r["high"], where, config)
    if type(low) not in (int, float):
        raise SpecError(f"{where}.{key}: a {type(low).__name__} field needs choices, not low/high")
    if not low < high:
        raise SpecError(f"{where}.{key}: low {low} must be below high {high}")
    log = r.get("log", False)
    if log and low <= 0:
        raise SpecError(f"{where}.{key}: log: true needs low > 0")
    return ParamRange(low=low, high=high, log=bool(log))


_CONSTRAINT = re.compile(r"^\s*(\w+)\s*(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


def parse_constraint(text, where: str) -> Constraint:
    m = _CONSTRAINT.match(str(text))
    if not m:
        raise SpecError(f"{where}: constraint {text!r} must read 'METRIC >= NUMBER' (or <=, >, <)")
    if m.group(1) not in METRICS:
        raise SpecError(f"{where}: constraint metric {m.group(1)!r} is not one of {', '.join(METRICS)}")
    return Constraint(metric=m.group(1), op=m.group(2), bound=float(m.group(3)))
