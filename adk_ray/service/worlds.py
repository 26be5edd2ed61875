"""The worlds the service runs, and the one place that maps a world's name to its trial config and its
trial function (an if/elif, not a registry: there are two worlds)."""
from __future__ import annotations

from adk_ray.worlds.llm.config import LLMTrialConfig
from adk_ray.worlds.mog.config import MoGTrialConfig

WORLDS = ("mog", "llm")
TrialConfig = MoGTrialConfig | LLMTrialConfig


def config_class(world: str) -> type:
    """The frozen trial-config dataclass of `world`."""
    if world == "mog":
        return MoGTrialConfig
    elif world == "llm":
        return LLMTrialConfig
    raise ValueError(f"world {world!r} is not one of {', '.join(WORLDS)}")


def world_of(cfg: TrialConfig) -> str:
    if isinstance(cfg, MoGTrialConfig):
        return "mog"
    elif isinstance(cfg, LLMTrialConfig):
        return "llm"
    raise TypeError(f"not a trial config: {type(cfg).__name__}")


def run_world_trial(cfg: TrialConfig, cache_dir: str):
    """Run one trial of its world; returns a TrialResult. The worlds are imported where they run."""
    if isinstance(cfg, MoGTrialConfig):
        from adk_ray.pipeline.mog import run_trial
        return run_trial(cfg, cache_dir=cache_dir)
    elif isinstance(cfg, LLMTrialConfig):
        from adk_ray.pipeline.llm_trial import run_llm_trial
        from adk_ray.service.llm_train import RayBackend
        return run_llm_trial(cfg, workdir=cache_dir, backend=RayBackend())
    raise TypeError(f"not a trial config: {type(cfg).__name__}")
