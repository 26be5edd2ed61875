"""Curves over training steps: alignment learning curves (stage 'curve') and the LLM world's
model-selection curves (stage 'selection_curve'); median across seeds with an IQR band.

Both take long rows (setting, pipeline, step, metric, value). With several settings (one per
trial of a β sweep, say) a plotly dropdown picks the one drawn: drawing all at once meant dozens
of subplots and seconds of browser time."""
from __future__ import annotations

import pandas as pd

from ..style import BOOKKEEPING, FILL, METRIC_LABELS, METRICS, PIPELINE_COLOURS, PIPELINES
from .grid import Grid

MAX_SETTINGS = 40
"""Settings offered in the dropdown; only the chosen one is drawn at a time."""
MAX_COLS = 4


def quantile_frame(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """q1/median/q3 of `value` per group of `keys`, one vectorised groupby (fast at 10k rows)."""
    g = df.dropna(subset=[value]).groupby(keys, sort=True)[value]
    q = g.quantile([0.25, 0.5, 0.75]).unstack()
    q.columns = ["q1", "median", "q3"]
    return q.reset_index()


def metric_curves(curves: pd.DataFrame, labels: pd.Series) -> tuple[pd.DataFrame, list[str]]:
    """Wide 'curve' rows (the four metric columns) as long rows."""
    cols = [m for m in METRICS if m in curves and curves[m].notna().any()]
    df = curves.assign(setting=labels.to_numpy())
    long = df[["setting", "pipeline", "step", *cols]].melt(
        id_vars=["setting", "pipeline", "step"], value_vars=cols, var_name="metric", value_name="value")
    return long, cols


def selection_value_columns(sel: pd.DataFrame, others: pd.DataFrame) -> list[str]:
    """Columns that hold curve values rather than trial parameters: 'metric'/'value' of long rows,
    or numeric columns that only selection rows fill (a reward std, a DPO margin...)."""
    if "metric" in sel and "value" in sel:
        return ["metric", "value"]
    return [c for c in sel.columns if c not in BOOKKEEPING and pd.api.types.is_numeric_dtype(sel[c])
            and sel[c].notna().any() and (c not in others or others[c].isna().all())]


def selection_curves(sel: pd.DataFrame, labels: pd.Series, others: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """'selection_curve' rows as long rows.

    Accepts long rows (a string column 'metric' and a numeric 'value') or wide rows where each
    curve is a numeric column: the four metrics plus the selection-only columns."""
    df = sel.assign(setting=labels.to_numpy())
    keep = ["setting", "pipeline", "step"]
    extra = selection_value_columns(sel, others)
    if extra == ["metric", "value"]:
        long = df[keep + extra].copy()
    else:
        cols = [m for m in METRICS if m in df and df[m].notna().any()] + extra
        long = df[keep + cols].melt(id_vars=keep, value_vars=cols, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long.dropna(subset=["value", "step"])
    return long, list(dict.fromkeys(long["metric"].astype(str)))


def curves_figure(long: pd.DataFrame, names: list[str], order: list[str], x_title: str = "step") -> Grid:
    """A panel per curve name, a median line + IQR band per pipeline, one setting at a time."""
    order = order[:MAX_SETTINGS]
    long = long[long["setting"].isin(order)]
    ncols = min(MAX_COLS, max(len(names), 1))
    nrows = max(1, -(-len(names) // ncols))
    fig = Grid(nrows, ncols, titles=[METRIC_LABELS.get(n, n) for n in names], hspace=0.05,
               vspace=0.35 / nrows if nrows > 1 else 0.1, height=100 + 300 * nrows)
    q = quantile_frame(long, ["setting", "metric", "pipeline", "step"], "value")
    groups = dict(tuple(q.groupby(["setting", "metric", "pipeline"], sort=False)))
    # K-A then A-K (the paper's order), then anything else alphabetically
    pipelines = sorted(q["pipeline"].unique(), key=lambda p: (PIPELINES.index(p) if p in PIPELINES else 9, p)) \
        if len(q) else []
    owner: list[str] = []  # setting of each trace, for the dropdown's visibility masks
    for i, name in enumerate(names):
        row, col = divmod(i, ncols)
        for setting in order:
            for p in pipelines:
                s = groups.get((setting, name, p))
                if s is not None and len(s):
                    _band(fig, s, p, showlegend=(i == 0), row=row + 1, col=col + 1,
                          visible=(setting == order[0]))
                    owner.extend([setting] * 2)
        fig.xaxis(row + 1, col + 1)["title"] = {"text": x_title}
    if len(order) > 1:
        fig.layout["updatemenus"] = [{
            "type": "dropdown", "direction": "down", "x": 0.07, "xanchor": "left", "y": 1.0,
            "yanchor": "bottom", "pad": {"b": 30}, "showactive": True,
            "buttons": [{"label": s, "method": "restyle", "args": [{"visible": [o == s for o in owner]}]}
                        for s in order],
        }]
        fig.annotations(text="setting:", x=0, y=1.0, xref="paper", yref="paper", xanchor="left",
                        yanchor="bottom", yshift=34, showarrow=False)
    fig.layout.update(margin={"l": 50, "r": 20, "t": 100, "b": 50},
                      legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": 0.98, "yanchor": "top",
                              "yref": "container"})
    return fig


def _band(fig: Grid, q: pd.DataFrame, pipeline: str, showlegend: bool, row: int, col: int,
          visible: bool = True) -> None:
    """Median line plus IQR band (one closed polygon: q3 forward, q1 back)."""
    x = q["step"].tolist()
    colour = PIPELINE_COLOURS.get(pipeline, "#555")
    fig.add({"type": "scatter", "x": x + x[::-1], "y": q["q3"].tolist() + q["q1"].tolist()[::-1],
             "mode": "lines", "line": {"width": 0}, "fill": "toself", "visible": visible,
             "fillcolor": FILL.get(pipeline, "rgba(80,80,80,0.15)"), "hoverinfo": "skip",
             "showlegend": False, "legendgroup": pipeline}, row, col)
    fig.add({"type": "scatter", "x": x, "y": q["median"].tolist(), "mode": "lines+markers", "name": pipeline,
             "legendgroup": pipeline, "showlegend": showlegend, "visible": visible,
             "line": {"color": colour, "width": 2}, "marker": {"size": 4},
             "customdata": q[["q1", "q3"]].to_numpy(),
             "hovertemplate": f"{pipeline}<br>step %{{x}}<br>median %{{y:.3f}}"
                              "<br>IQR [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra></extra>"}, row, col)
