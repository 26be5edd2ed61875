"""The fixed Arrow schema of a sweep's rows (docs/results.md).

Fixed, not inferred: every trial's file has the same columns and types whatever it swept or whether
it failed, so pyarrow.dataset, duckdb and polars read the directory as one table. Every field of
the world's trial config is a typed column; the two tuple fields become the per-row scalars `seed` and
`iterations` that the world fills in. A world adds its own columns (`World.extra_columns`).

SCHEMA_VERSION is stamped in every data file's schema metadata (and in sweep.json); raise it whenever
the columns shared by every sweep change, so that a results directory written by older code is refused
instead of mixed (ResultStore.check_schema).
"""
from __future__ import annotations

import pyarrow as pa

from adk_ray.service.spec import METRICS
from adk_ray.service.store import SCHEMA_KEY
from adk_ray.service.values import TUPLE_FIELDS, field_types
from adk_ray.service.worlds import World

SCHEMA_VERSION = 1
"""The columns of docs/results.md. Files written before the version was stamped count as 1 too."""
_ARROW = {str: pa.string(), float: pa.float64(), int: pa.int64(), bool: pa.bool_()}

LEAD = [("sweep", pa.string()), ("trial_id", pa.string()), ("world", pa.string()), ("algorithm", pa.string()),
        ("pipeline", pa.string()), ("stage", pa.string())]
ROW = [("iterations", pa.int64()), ("seed", pa.int64()), ("step", pa.int64())]
SERVICE = [("status", pa.string()), ("error", pa.string()), ("wall_seconds", pa.float64()),
           ("config_json", pa.string()), ("code_version", pa.string())]


def config_columns(world: World) -> list[tuple[str, pa.DataType]]:
    """Scalar config fields as columns, in the config's order (algorithm is among the lead columns)."""
    return [(k, _ARROW[t]) for k, t in field_types(world.config).items() if k not in TUPLE_FIELDS and k != "algorithm"]


def results_schema(world: World) -> pa.Schema:
    cols = (LEAD + config_columns(world) + ROW + [(m, pa.float64()) for m in METRICS] + list(world.extra_columns)
            + SERVICE)
    return pa.schema([pa.field(name, kind) for name, kind in cols], metadata={SCHEMA_KEY: str(SCHEMA_VERSION)})
