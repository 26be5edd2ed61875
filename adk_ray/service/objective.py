"""The number an Optuna search optimises, read from a trial's rows.

Objective = median across seeds of `search.metric` over the final models of `search.pipeline` at the
trial's longest iteration count; the constraint is evaluated on the same median of its own metric.
The median, not the mean: the paper's boxplots show heavy seed-to-seed tails (K-A especially).
"""
from __future__ import annotations

import math
import statistics

import pyarrow as pa

from adk_ray.service.spec import SearchSpec


def objective(table: pa.Table, search: SearchSpec) -> dict:
    """{metric: value, 'constraint_violation': v} (NaN for a failed trial; v <= 0 means feasible)."""
    rows = [r for r in table.to_pylist() if r["pipeline"] == search.pipeline and r["stage"] == "final"]
    out = {search.metric: _median(rows, search.metric)}
    if search.constraint:
        value = _median(rows, search.constraint.metric)
        out["constraint_violation"] = search.constraint.violation(value) if not math.isnan(value) else math.nan
    return out


def _median(rows: list[dict], metric: str) -> float:
    if not rows:
        return math.nan
    longest = max(r["iterations"] for r in rows)
    values = [r[metric] for r in rows if r["iterations"] == longest and r[metric] is not None]
    return float(statistics.median(values)) if values else math.nan
