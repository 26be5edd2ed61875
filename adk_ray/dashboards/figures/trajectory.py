"""The paper's Figure 5: each pipeline's path through (Overall Recall, Target Precision).

K-A walks p′ → p″ → p″_KA, A-K walks p′ → p′_AK → p″_AK. A point is the mean over seeds; its
marker size is the cross-seed standard deviation (mean of the two coordinates' stds), so an
unstable stage is visibly big."""
from __future__ import annotations

import pandas as pd

from ..sections import isin_values, varying_params
from ..style import PIPELINE_COLOURS, axis_label, fmt_value
from .grid import Grid

MAX_SETTINGS = 4
X, Y = "overall_recall", "target_precision"

# (node label, stage, pipeline or None for either)
PATHS = {
    "K-A": [("p′", "p_prime", None), ("p″", "p_dprime", "K-A"), ("p″_KA", "final", "K-A")],
    "A-K": [("p′", "p_prime", None), ("p′_AK", "aligned", "A-K"), ("p″_AK", "final", "A-K")],
}


def _node(df: pd.DataFrame, stage: str, pipeline: str | None) -> dict | None:
    s = df[df["stage"] == stage]
    if pipeline is not None:
        s = s[s["pipeline"] == pipeline]
    s = s.dropna(subset=[X, Y])
    if s.empty:
        return None
    # p′ is written once per pipeline of a trial: one value per seed, not two.
    if "seed" in s:
        s = s.groupby("seed")[[X, Y]].mean()
    sx = float(s[X].std(ddof=0)) if len(s) > 1 else 0.0
    sy = float(s[Y].std(ddof=0)) if len(s) > 1 else 0.0
    return {"x": float(s[X].mean()), "y": float(s[Y].mean()), "sx": sx, "sy": sy,
            "std": (sx + sy) / 2, "n": len(s)}


def settings(rows: pd.DataFrame) -> list[tuple[str, dict]]:
    """(label, {column: value}) per distinct setting of the final rows, in sorted order."""
    finals = rows[rows["stage"] == "final"]
    cols = varying_params(finals)
    if not cols:
        return [("all", {})]
    combos = finals[cols].drop_duplicates().sort_values(cols)
    return [(" · ".join(f"{axis_label(c)}={fmt_value(r[c])}" for c in cols), {c: r[c] for c in cols})
            for _, r in combos.iterrows()]


def trajectory_figure(rows: pd.DataFrame) -> Grid:
    """rows: ok rows of stages p_prime, p_dprime, aligned and final."""
    chosen = settings(rows)[:MAX_SETTINGS]
    order = [label for label, _ in chosen]
    fig = Grid(1, len(order), titles=order if len(order) > 1 else None, hspace=0.08, height=460)
    nodes = {}
    for setting, values in chosen:
        # A reference-model row (p′, p″) may leave alignment parameters empty: it belongs to
        # every setting whose non-empty parameters it matches.
        mask = pd.Series(True, index=rows.index)
        for c, v in values.items():
            mask &= rows[c].isna() | isin_values(rows[c], [v])
        df = rows[mask]
        for p, path in PATHS.items():
            nodes[(setting, p)] = [(name, _node(df, stage, pipe)) for name, stage, pipe in path]
    stds = [n["std"] for v in nodes.values() for _, n in v if n]
    top = max(stds) if stds and max(stds) > 0 else 1.0
    for col, setting in enumerate(order, start=1):
        for p in PATHS:
            pts = [(name, n) for name, n in nodes[(setting, p)] if n]
            if not pts:
                continue
            fig.add({
                "type": "scatter", "x": [n["x"] for _, n in pts], "y": [n["y"] for _, n in pts],
                "mode": "lines+markers+text", "name": p, "legendgroup": p, "showlegend": col == 1,
                "text": [name for name, _ in pts], "textposition": "top center",
                "line": {"color": PIPELINE_COLOURS[p], "width": 2},
                "marker": {"color": PIPELINE_COLOURS[p], "opacity": 0.75,
                           "size": [10 + 40 * n["std"] / top for _, n in pts], "line": {"width": 1, "color": "white"}},
                "customdata": [[name, n["sx"], n["sy"], n["n"]] for name, n in pts],
                "hovertemplate": "%{customdata[0]}<br>recall %{x:.3f} ± %{customdata[1]:.3f}"
                                 "<br>target precision %{y:.3f} ± %{customdata[2]:.3f}<br>seeds %{customdata[3]}"
                                 f"<extra>{p}</extra>",
            }, 1, col)
        fig.xaxis(1, col)["title"] = {"text": "Overall Recall"}
        if col == 1:
            fig.yaxis(1, col)["title"] = {"text": "Target Precision"}
    fig.layout.update(margin={"l": 60, "r": 20, "t": 70, "b": 50},
                      legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": 0.98, "yanchor": "top",
                              "yref": "container"})
    return fig
