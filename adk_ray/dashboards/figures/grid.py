"""Plain-dict plotly figures on a grid of subplots.

plotly's graph objects validate every property in Python, which costs ~0.15 s per make_subplots
and ~5 ms per trace; the sweep service re-renders after every trial, so figures here are built
as the JSON plotly.js reads (same property names as the graph-objects API) and serialised
without validation."""
from __future__ import annotations

from functools import lru_cache

import plotly.io as pio


@lru_cache(maxsize=1)
def _template() -> dict:
    # Resolved once in Python: plotly.js itself does not know template names.
    return {"layout": pio.templates["plotly_white"].layout.to_plotly_json()}


class Grid:
    """rows × cols subplots; axes numbered row-major like make_subplots (x, x2, x3, ...)."""

    def __init__(self, rows: int = 1, cols: int = 1, titles: list[str] | None = None,
                 row_titles: list[str] | None = None, hspace: float = 0.06, vspace: float = 0.08,
                 height: int = 420):
        self.rows, self.cols = rows, cols
        self.data: list[dict] = []
        self.layout: dict = {"template": _template(), "height": height, "annotations": [], "shapes": []}
        w = (1 - hspace * (cols - 1)) / cols
        h = (1 - vspace * (rows - 1)) / rows
        for r in range(1, rows + 1):
            for c in range(1, cols + 1):
                xa, ya = self._names(r, c)
                x0 = (c - 1) * (w + hspace)
                y1 = 1 - (r - 1) * (h + vspace)
                self.layout["xaxis" + xa[1:]] = {"domain": [x0, x0 + w], "anchor": ya}
                self.layout["yaxis" + ya[1:]] = {"domain": [y1 - h, y1], "anchor": xa}
                i = (r - 1) * cols + c - 1
                title = titles[i] if titles and i < len(titles) else None     # the last row may be part-filled
                if title:
                    self.annotations(text=f"<b>{title}</b>", x=x0 + w / 2, y=y1, xref="paper", yref="paper",
                                     xanchor="center", yanchor="bottom", showarrow=False, font={"size": 14})
            if row_titles and row_titles[r - 1]:
                self.annotations(text=row_titles[r - 1], x=1.0, y=y1 - h / 2, xref="paper", yref="paper",
                                 xanchor="left", yanchor="middle", textangle=90, showarrow=False,
                                 xshift=8, font={"size": 12})

    def _names(self, row: int, col: int) -> tuple[str, str]:
        i = (row - 1) * self.cols + col
        return ("x" if i == 1 else f"x{i}"), ("y" if i == 1 else f"y{i}")

    def annotations(self, **a) -> None:
        self.layout["annotations"].append(a)

    def add(self, trace: dict, row: int = 1, col: int = 1) -> None:
        xa, ya = self._names(row, col)
        self.data.append({**trace, "xaxis": xa, "yaxis": ya})

    def shape(self, row: int = 1, col: int = 1, **shape) -> None:
        xa, ya = self._names(row, col)
        self.layout["shapes"].append({**shape, "xref": xa, "yref": ya})

    def xaxis(self, row: int = 1, col: int = 1) -> dict:
        """The layout dict of that subplot's x axis, to update in place."""
        return self.layout["xaxis" + self._names(row, col)[0][1:]]

    def yaxis(self, row: int = 1, col: int = 1) -> dict:
        return self.layout["yaxis" + self._names(row, col)[1][1:]]

    def x_ref(self, row: int = 1, col: int = 1) -> str:
        return self._names(row, col)[0]

    def to_dict(self) -> dict:
        return {"data": self.data, "layout": self.layout}
