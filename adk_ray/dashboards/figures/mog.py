"""The paper's Figures 1 and 2 for the MoG world: where p*, p′, p″ put mass, and what the two
references' samples earn (the sampling trap: p″ almost never visits the target)."""
from __future__ import annotations

import numpy as np

from ..mog import STD, Geometry, Mixture, density_grid, p_star, reward
from ..style import PIPELINE_COLOURS, TARGET_GREEN
from .grid import Grid

N_SAMPLES = 4096
HIT_FRACTION = 0.5
"""A sample 'hits' the target when R(x) exceeds half the maximum reward (within ~0.6 of a centre)."""


def _rounded(z: np.ndarray, digits: int = 4) -> np.ndarray:
    """z to `digits` significant digits of its maximum: what a colour scale and a 3-digit hover show,
    at a fifth of the page's bytes (a 121×121 grid per panel is written out as JSON numbers)."""
    top = float(np.nanmax(np.abs(z))) if z.size else 0.0
    return z if top <= 0 or not np.isfinite(top) else z.round(digits - 1 - int(np.floor(np.log10(top))))


def density_figure(p_prime: Mixture | None, p_dprime: Mixture | None, geometry: Geometry,
                   titles: tuple[str, str, str] = ("p* (ground truth)", "p′ (high recall, A-K reference)",
                                                   "p″ (low recall, K-A reference)")) -> Grid:
    fig = Grid(1, 3, titles=list(titles), hspace=0.05, height=440)
    for col, mix in enumerate((p_star(geometry), p_prime, p_dprime), start=1):
        fig.xaxis(1, col).update(range=[-3, 3], constrain="domain", zeroline=False)
        fig.yaxis(1, col).update(range=[-3, 3], scaleanchor=fig.x_ref(1, col), scaleratio=1,
                                 constrain="domain", zeroline=False)
        if mix is None:
            fig.annotations(text="not stored yet", x=0, y=0, xref=fig.x_ref(1, col),
                            yref="y" if col == 1 else f"y{col}", showarrow=False)
            continue
        # Each panel on its own colour scale (as the paper draws them); the × sizes carry the weights.
        t, z = density_grid(mix)
        fig.add({"type": "heatmap", "x": t.round(3), "y": t.round(3), "z": _rounded(z), "colorscale": "Viridis", "showscale": False,
                 "zsmooth": "best",
                 "hovertemplate": "x=%{x:.2f}, y=%{y:.2f}<br>q=%{z:.3f}<extra></extra>"}, 1, col)
        # Component means, sized by weight: which modes a model dropped is then obvious.
        fig.add({"type": "scatter", "x": mix.means[:, 0], "y": mix.means[:, 1], "mode": "markers",
                 "showlegend": False, "customdata": mix.weights,
                 "marker": {"symbol": "x", "color": "white", "size": (6 + 30 * mix.weights).tolist(),
                            "line": {"width": 1, "color": "black"}},
                 "hovertemplate": "component mean (%{x:.2f}, %{y:.2f})<br>weight %{customdata:.3f}<extra></extra>"},
                1, col)
        for cx, cy in geometry.target_centres:
            r = 2 * STD
            fig.shape(1, col, type="circle", x0=cx - r, x1=cx + r, y0=cy - r, y1=cy + r,
                      line={"color": TARGET_GREEN, "width": 3})
    fig.layout.update(margin={"l": 30, "r": 20, "t": 60, "b": 30})
    return fig


def reward_histogram_figure(p_prime: Mixture | None, p_dprime: Mixture | None, geometry: Geometry) -> Grid:
    fig = Grid(1, 1, height=380)
    scale, alpha = geometry.reward_scale, geometry.reward_alpha
    threshold = HIT_FRACTION * scale
    for mix, name, colour in ((p_prime, "x ~ p′ (A-K reference)", PIPELINE_COLOURS["A-K"]),
                              (p_dprime, "x ~ p″ (K-A reference)", PIPELINE_COLOURS["K-A"])):
        if mix is None:
            continue
        r = reward(mix.sample(N_SAMPLES), geometry)
        # Binned here: 4096 raw samples per trace would only make the page heavier.
        counts, edges = np.histogram(r, bins=40, range=(0.0, scale))
        frac = counts / max(len(r), 1)
        fig.add({"type": "bar", "x": (edges[:-1] + edges[1:]) / 2, "y": frac,
                 "name": f"{name}: {np.mean(r > threshold):.1%} of samples with R > {threshold:g}",
                 "marker": {"color": colour}, "opacity": 0.8,
                 "customdata": np.stack([edges[:-1], edges[1:]], axis=1),
                 "hovertemplate": "R in [%{customdata[0]:.2f}, %{customdata[1]:.2f})<br>fraction %{y:.4f}<extra></extra>"})
    fig.xaxis().update(title={"text": f"R(x) = {scale:g}·exp(−{alpha:g}‖x − c_t‖²)"}, range=[0, scale])
    fig.yaxis().update(title={"text": "fraction of samples (log scale)"}, type="log")
    # Side by side, not overlaid: both references put most samples in the R≈0 bin.
    fig.layout.update(barmode="group", bargap=0.1, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": 1.12})
    return fig
