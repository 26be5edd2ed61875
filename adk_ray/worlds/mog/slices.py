"""Settings slices: the frozen dataclass each stage or aligner takes whole, cut from the flat trial config.

The trial config stays flat, because its fields are the sweep keys users `--set`; a slice names
which of them it reads. A slice field reads the config field of its own name, or the one given by
`reads("config_field")` where the stage's name for it is shorter (PPO's `clip` is `ppo_clip`).
"""
from __future__ import annotations

import dataclasses
from typing import TypeVar

S = TypeVar("S")


def reads(config_field: str):
    """A slice field filled from the config field `config_field`."""
    return dataclasses.field(metadata={"config": config_field})


def slice_of(cls: type[S], cfg) -> S:
    """An instance of the settings dataclass `cls` from the trial config `cfg` (its own checks run)."""
    return cls(**{f.name: getattr(cfg, f.metadata.get("config", f.name)) for f in dataclasses.fields(cls)})
