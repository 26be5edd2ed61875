"""Typing of sweep values: every value a sweep file or `--set` gives is coerced to its config field's type.

Coercing up front is what makes a sweep's points comparable (β given as `1` in one sub-grid and `1.0`
in another is the same point, so the planner merges them) and what turns a bad value into one clear
message instead of a TypeError deep inside the world.
"""
from __future__ import annotations

import math
import typing

import dataclasses

TUPLE_FIELDS = ("iterations", "seeds")
"""Fields that hold a tuple of ints; the world batches over them inside one trial."""


class SpecError(ValueError):
    """A problem with the user's input (sweep file, flags, storage); its text is shown as one line."""


def config_fields(config: type) -> list[str]:
    """Field names of a world's trial-config class, in order."""
    return [f.name for f in dataclasses.fields(config)]


def field_types(config: type) -> dict[str, type]:
    """Python type of each trial-config field (int, float, str, bool, or tuple for TUPLE_FIELDS)."""
    hints = typing.get_type_hints(config)
    return {name: (tuple if name in TUPLE_FIELDS else _strip_optional(hints[name])) for name in config_fields(config)}


def _strip_optional(hint):
    """`X | None` -> X (every column is nullable anyway)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


def check_key(key: str, where: str, config: type) -> None:
    if key not in config_fields(config):
        raise SpecError(f"{where}: unknown key {key!r}; valid keys: {', '.join(config_fields(config))}")


def coerce(key: str, value, where: str, config: type):
    """`value` (from YAML, or a string from --set) as the type of the trial-config field `key`."""
    check_key(key, where, config)
    kind = field_types(config)[key]
    if kind is tuple:
        return int_tuple(key, value, where)
    return _scalar(kind, value, f"{where}: {key}")


def int_tuple(key: str, value, where: str) -> tuple[int, ...]:
    """One int or a list of them (a TUPLE_FIELDS value) as a tuple of ints."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(_scalar(int, v, f"{where}: {key}") for v in items)


def _scalar(kind: type, v, where: str):
    bad = SpecError(f"{where}: {v!r} is not {'an' if kind is int else 'a'} {kind.__name__}")
    if kind is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return v.strip().lower() in ("true", "yes", "1")
        raise bad
    if isinstance(v, bool):  # YAML's `yes` must not become 1 or 1.0
        raise bad
    if kind is int:
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                pass
        raise bad
    if kind is float:
        if isinstance(v, (int, float)):
            f = float(v)
        elif isinstance(v, str):
            try:
                f = float(v.strip())  # accepts 1e30, which YAML 1.1 would read as a string
            except ValueError:
                raise bad from None
        else:
            raise bad
        if math.isnan(f):
            raise bad
        return f
    if kind is str:
        if isinstance(v, str):
            return v.strip()
        raise bad
    raise bad
