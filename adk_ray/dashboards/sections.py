"""Which rows each boxplot section shows: one section per swept axis, taken from sweep.json.

A sweep's grid is a list of sub-grids, each a cartesian product (e.g. β × {iterations=300} and
{β=1.0} × iterations). The β section must show only the trials of the sub-grid in which β varies,
with every other axis held where that sub-grid holds it; otherwise the β=1.0 box would mix in the
iteration sweep's trials. Axes a sub-grid does not name are held at the sweep's fixed value, or,
failing that, at the value most of the sub-grid's trials share (the config default).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .style import BOOKKEEPING, axis_label, fmt_value


@dataclass
class Section:
    axis: str
    """The swept parameter on the x axis."""
    values: list | None = None
    """The axis values of the sub-grid (None: every value in the data)."""
    held: dict[str, list | None] = field(default_factory=dict)
    """Other axes: allowed values, or None for 'the value most trials share'."""
    covarying: list[str] = field(default_factory=list)
    """Axes that vary together with `axis` inside the sub-grid; they split the x categories."""
    grid_index: int | None = None
    """Index of the sub-grid in sweep.json, None when inferred from the data."""
    heading: str = ""
    """A title of its own (the one section of a sweep with no swept axis)."""

    @property
    def title(self) -> str:
        if self.heading:
            return self.heading
        fixed = [f"{axis_label(a)} = {'/'.join(fmt_value(x) for x in v)}"
                 for a, v in self.held.items() if v is not None and len(v) <= 3]
        extra = f" ({', '.join(fixed)})" if fixed else ""
        return f"Sweep over {axis_label(self.axis)}{extra}"


def _as_list(v) -> list:
    if isinstance(v, (list, tuple)):
        out = []
        for x in v:  # a nested list (e.g. iterations: [[100, 300]]) means the same values
            out.extend(x if isinstance(x, (list, tuple)) else [x])
        return out
    return [v]


def subgrids(sweep: dict | None) -> list[dict[str, list]]:
    grid = (sweep or {}).get("grid") or []
    if isinstance(grid, dict):
        grid = [grid]
    return [{k: _as_list(v) for k, v in g.items()} for g in grid if isinstance(g, dict)]


def plan_sections(sweep: dict | None, rows: pd.DataFrame) -> list[Section]:
    """Sections in group_by order; inferred from the data's varying columns without sweep.json."""
    grids = subgrids(sweep)
    if not grids:
        inferred = _infer_sections(rows)
        wanted = list((sweep or {}).get("group_by") or [])
        picked = [s for a in wanted for s in inferred if s.axis == a]
        return picked or inferred
    fixed = (sweep or {}).get("fixed") or {}
    all_axes = list(dict.fromkeys(a for g in grids for a in g))
    axes = list((sweep or {}).get("group_by") or [a for a in all_axes if any(len(g.get(a, [])) > 1 for g in grids)])
    sections = []
    for axis in axes:
        varying = [i for i, g in enumerate(grids) if len(g.get(axis, [])) > 1]
        # A smoke sweep may shrink an axis to one value: still show it, from the first sub-grid naming it.
        chosen = varying or [i for i, g in enumerate(grids) if axis in g][:1]
        if not chosen:
            sections.extend(s for s in _infer_sections(rows) if s.axis == axis)
            continue
        for i in chosen:
            g = grids[i]
            held: dict[str, list | None] = {}
            for a in all_axes:
                if a in (axis, "seeds"):  # seeds are what a box is drawn over, never held
                    continue
                if a in g:
                    held[a] = g[a]
                elif a in fixed:
                    held[a] = _as_list(fixed[a])
                else:
                    held[a] = None
            covarying = [a for a in g if a != axis and len(g[a]) > 1]
            sections.append(Section(axis=axis, values=g[axis], held=held, covarying=covarying, grid_index=i))
    return sections


def _param_columns(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c not in BOOKKEEPING]


def _infer_sections(rows: pd.DataFrame) -> list[Section]:
    finals = final_rows(rows)
    if finals.empty:
        return []
    varying = [c for c in _param_columns(finals)
               if finals[c].map(_hashable).nunique(dropna=True) > 1]
    if not varying and "algorithm" in finals:
        # One setting (e.g. llm_ppo): still K-A against A-K, drawn over the one constant value.
        return [Section(axis="algorithm", heading="Final models: K-A against A-K")]
    return [Section(axis=a, held={b: None for b in varying if b != a}) for a in varying]


def _hashable(v):
    return tuple(v) if isinstance(v, (list, np.ndarray)) else v


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty or "stage" not in rows:
        return rows.iloc[0:0]
    ok = rows["status"].eq("ok") if "status" in rows else True
    return rows[rows["stage"].eq("final") & ok]


def isin_values(col: pd.Series, values: list) -> pd.Series:
    """col ∈ values, numerically tolerant (0.05 from YAML vs a float64 column)."""
    nums = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and nums.notna().all():
        c = col.to_numpy(dtype=float)
        return pd.Series(np.isclose(c[:, None], nums.to_numpy(dtype=float)[None, :],
                                    rtol=1e-9, atol=1e-12).any(axis=1), index=col.index)
    return col.astype(str).isin([str(v) for v in values])


def select_rows(section: Section, rows: pd.DataFrame, notices: list[str] | None = None) -> pd.DataFrame:
    """The ok final rows of `section`: its own constraints first, then modes for unnamed axes."""
    df = final_rows(rows)
    if section.values is not None and section.axis in df:
        # Only this sub-grid's points: another sub-grid's trial can share a value of the axis.
        df = df[isin_values(df[section.axis], section.values)]
    for a, values in section.held.items():
        if values is not None and a in df:
            df = df[isin_values(df[a], values)]
        elif values is not None and notices is not None:
            notices.append(f"Section {axis_label(section.axis)}: column {a!r} is not in the data; not filtered on it.")
    for a, values in section.held.items():
        if values is None and a in df and len(df):
            # The value most trials share: count trials, not rows, so seeds do not weigh in.
            per_trial = df.drop_duplicates("trial_id") if "trial_id" in df else df
            mode = per_trial[a].map(_hashable).mode(dropna=True)
            if len(mode):
                df = df[isin_values(df[a], [mode.iloc[0]])]
    return df


def x_labels(section: Section, df: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """Per-row x category and the categories in order (numeric ascending, co-varying axes joined)."""
    cols = [section.axis, *[c for c in section.covarying if c in df]]
    if section.axis not in df or df.empty:
        return pd.Series([], dtype=str), []
    keys = df[cols].map(_hashable) if hasattr(df[cols], "map") else df[cols]
    label = keys[section.axis].map(fmt_value)
    for c in cols[1:]:
        label = label + " · " + axis_label(c) + "=" + keys[c].map(fmt_value)
    order = keys.drop_duplicates().assign(_label=label).sort_values(cols, key=_sort_key)["_label"].tolist()
    return label, list(dict.fromkeys(order))


def _sort_key(s: pd.Series) -> pd.Series:
    nums = pd.to_numeric(s, errors="coerce")
    return nums if nums.notna().all() else s.astype(str)


def varying_params(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Parameter columns with more than one distinct value in `df`."""
    return [c for c in _param_columns(df) if c not in exclude
            and df[c].map(_hashable).nunique(dropna=True) > 1]


def setting_labels(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> tuple[pd.Series, list[str]]:
    """Label each row by the parameters that vary across `df` ('β=0.5 · iterations=300'), in order.

    Used where a figure draws one group per trial setting (learning curves, trajectories)."""
    if df.empty:
        return pd.Series([], dtype=str), []
    cols = varying_params(df, exclude)
    if not cols:
        return pd.Series("all", index=df.index), ["all"]
    keys = df[cols].map(_hashable)
    label = pd.Series("", index=df.index)
    for i, c in enumerate(cols):
        label = label + ("" if i == 0 else " · ") + axis_label(c) + "=" + keys[c].map(fmt_value)
    order = keys.drop_duplicates().assign(_l=label).sort_values(cols, key=_sort_key)["_l"].tolist()
    return label, list(dict.fromkeys(order))
