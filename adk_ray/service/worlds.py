"""The worlds the service runs: ONE table, `WORLDS`, keyed by the name a sweep file gives in `world:`.

Everything the service needs to know about a world is in its `World` record: the trial config class,
how to run a trial, the result columns it adds, how `--smoke` shrinks it, what Tune reserves per trial
and where its shared-stage cache lives. The rest of service/ reads these fields and never branches on
a world's name; adding a world is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import pyarrow as pa

from adk_ray.pipeline.result import TrialResult
from adk_ray.worlds.llm.config import LLMTrialConfig
from adk_ray.worlds.mog.config import MoGTrialConfig

TrialConfig = MoGTrialConfig | LLMTrialConfig


@dataclass(frozen=True)
class SmokeRules:
    """How `--smoke` shrinks a sweep of this world (docs/sweeps.md); the shape of the sweep survives."""

    seeds: int
    """The first this many seeds are kept."""
    max_iterations: int
    """Cap on alignment iterations; an iteration axis becomes (max_iterations // 2, max_iterations)."""
    settings: dict = field(default_factory=dict)
    """Fields set outright (e.g. the LLM world's CPU preset)."""
    caps: dict = field(default_factory=dict)
    """Field -> upper bound, applied where the sweep's value is non-zero (0 means "off" and stays)."""


@dataclass(frozen=True, eq=False)
class World:
    """One world as the service sees it. Compared by identity: the records of `WORLDS` are the only ones."""

    name: str
    """The key in `WORLDS` and the `world` column of every row."""
    config: type
    """The frozen trial-config dataclass (`from_dict`, `replace`, fields `iterations` and `seeds`)."""
    run: Callable[[TrialConfig, str], TrialResult]
    """`run(cfg, cache_dir)`: both pipelines for every seed and iteration count of one trial."""
    extra_columns: tuple[tuple[str, pa.DataType], ...]
    """Result columns beyond the config fields and the metrics (docs/results.md)."""
    smoke: SmokeRules
    """What `--smoke` does to this world's sweeps."""
    cpus_per_trial: float
    """CPUs Tune reserves per trial unless --cpus-per-trial says otherwise (0: a driver-only trial)."""
    max_concurrent: int | None
    """Trials at once unless --max-concurrent says otherwise (None: as many as the resources allow)."""
    cache: str
    """The shared-stage cache, relative to the storage (`{sweep}` is the sweep's name)."""
    cache_on_storage: bool = False
    """With object storage, whether the cache lives there too (every node of a cluster reads what another
    wrote) or under a node-local temp dir (a local disk cache with file locks)."""
    warm_workers: bool = False
    """Run each trial's world in a Ray task named after the trial, on a pooled worker process that later
    trials reuse, driven by a reused Tune actor (runner.py): a fresh actor per trial costs ~2 s of Tune's
    actor lifecycle and ~2 s of importing torch (benchmarks/trial_overhead.py), which is as long as a
    short MoG trial's own work. Off: each trial runs in a fresh Tune actor named after it."""


def _run_mog(cfg: MoGTrialConfig, cache_dir: str) -> TrialResult:
    from adk_ray.pipeline.mog import run_trial
    return run_trial(cfg, cache_dir=cache_dir)


def _run_llm(cfg: LLMTrialConfig, cache_dir: str) -> TrialResult:
    from adk_ray.pipeline.llm_trial import run_llm_trial
    from adk_ray.service.llm_train import RayBackend  # Ray Train + DeepSpeed workers: service-side, imported here
    # each stage in one line as it starts and ends ("train p_prime done in 38.1s"): on the driver's console
    # under the trial's name, what a user watches an hours-long LLM trial by
    return run_llm_trial(cfg, workdir=cache_dir, backend=RayBackend(), progress=partial(print, flush=True))


MOG = World(
    name="mog", config=MoGTrialConfig, run=_run_mog,
    # per model: Monte-Carlo standard errors, exact target mass, the sampling-trap figure; per seed's p'':
    # whether it lost the target (docs/mog.md, "The premise")
    extra_columns=(("precision_se", pa.float64()), ("recall_se", pa.float64()), ("target_mass", pa.float64()),
                   ("reward_hit_share", pa.float64()), ("trap", pa.bool_())),
    smoke=SmokeRules(seeds=2, max_iterations=30, caps={
        "sft_iterations": 60, "kd_iterations": 60, "eval_samples": 512, "dpo_offline_pairs": 512,
        "eval_every": 10}),  # eval_every 10: a 30-step run still draws a curve
    # single-threaded trials, as many at once as CPUs; every MoG sweep of one storage shares one cache
    # (<storage>/mog_cache: its keys name everything a stage reads, so mog_ppo's p' serves mog_dpo too)
    cpus_per_trial=1.0, max_concurrent=None, cache="mog_cache", warm_workers=True)

LLM = World(
    name="llm", config=LLMTrialConfig, run=_run_llm,
    # selection_curve rows: what the model-selection rules read (appendix C.4); aligned/final rows: the
    # checkpoint the rule picked.
    extra_columns=(("reward_std", pa.float64()), ("margin", pa.float64()), ("accuracy", pa.float64()),
                   ("kl", pa.float64()), ("loss", pa.float64()), ("selected_step", pa.int64())),
    # the CPU `tiny` preset with its own data sizes (0: the preset's), so a smoke run shares p', p'' and
    # p_target with any other tiny-preset run of the same storage; every stage still runs on Ray Train
    smoke=SmokeRules(seeds=1, max_iterations=8, settings={
        "preset": "tiny", "train_samples": 0, "eval_samples": 0, "checkpoint_every": 2}),
    # A trial only drives Ray Train runs and Ray tasks that reserve their own CPUs/GPUs, so it reserves
    # none; one at a time, since the trials of a sweep share each seed's chain of models, which are
    # shared by every LLM sweep of one storage (<storage>/llm_cache).
    # Its models, token sets, scores and checkpoints are read by Ray tasks and Ray Train workers on any
    # node, so with object storage they live there (`adk_ray.storage` locations).
    cpus_per_trial=0.0, max_concurrent=1, cache="llm_cache", cache_on_storage=True)

WORLDS: dict[str, World] = {w.name: w for w in (MOG, LLM)}
DEFAULT_WORLD = MOG.name
"""A sweep file without `world:`."""


def world_named(name: str) -> World:
    """The world of that name; ValueError naming the valid ones."""
    try:
        return WORLDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"world {name!r} is not supported; valid worlds: {', '.join(WORLDS)}") from None
