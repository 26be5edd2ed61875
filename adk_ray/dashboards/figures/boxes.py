"""The paper's boxplot figure for one section: four metric panels, K-A and A-K side by side."""
from __future__ import annotations

import pandas as pd

from ..style import METRIC_LABELS, METRICS, PIPELINE_COLOURS, PIPELINES, fmt_num
from .grid import Grid

MAX_POINTS = 20_000
"""Above this many per-seed points in one figure, draw boxes only: the page must stay responsive."""


def section_figure(summary: pd.DataFrame, order: list[str], x_title: str) -> Grid:
    fig = Grid(1, len(METRICS), titles=[METRIC_LABELS[m] for m in METRICS], hspace=0.05, height=430)
    show_points = bool(len(summary)) and summary["n"].sum() <= MAX_POINTS
    for col, m in enumerate(METRICS, start=1):
        for p in PIPELINES:
            s = summary[(summary["metric"] == m) & (summary["pipeline"] == p)] if len(summary) else summary
            if s.empty:
                continue
            # Precomputed quartiles: the same numbers as the table, and O(boxes) work for the browser.
            # Per-seed values ride along as 2-D y/customdata so each seed is a hoverable point;
            # hovering a box shows plotly's own q1/median/q3/fences.
            trace = {
                "type": "box", "name": p, "legendgroup": p, "showlegend": col == 1, "offsetgroup": p,
                "x": s["x"].tolist(), "q1": s["q1"].tolist(), "median": s["median"].tolist(),
                "q3": s["q3"].tolist(), "lowerfence": s["lowerfence"].tolist(),
                "upperfence": s["upperfence"].tolist(),
                "marker": {"color": PIPELINE_COLOURS[p], "size": 4, "opacity": 0.7},
                "line": {"color": PIPELINE_COLOURS[p], "width": 1.5},
                "fillcolor": _fill(PIPELINE_COLOURS[p]), "hoveron": "boxes+points",
            }
            if show_points:
                trace.update(
                    y=[v.tolist() for v in s["values"]], boxpoints="all", jitter=0.35, pointpos=0,
                    customdata=[[_point_text(p, r, seed, v) for seed, v in zip(r.seeds, r.values)]
                                for r in s.itertuples()],
                    hovertemplate="%{customdata}<extra></extra>")
            else:
                trace["boxpoints"] = False
            fig.add(trace, 1, col)
        fig.xaxis(1, col).update(type="category", categoryorder="array", categoryarray=order,
                                 title={"text": x_title})
    fig.layout.update(boxmode="group", margin={"l": 50, "r": 20, "t": 60, "b": 60}, hovermode="closest",
                      legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": 1.16})
    return fig


def _point_text(p: str, r, seed, v: float) -> str:
    return (f"{p}, {r.x}<br>seed {seed}: {fmt_num(v)}<br>median {fmt_num(r.median)}, "
            f"IQR {fmt_num(r.q3 - r.q1)} [{fmt_num(r.q1)}, {fmt_num(r.q3)}], n={r.n}")


def _fill(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},0.35)"
