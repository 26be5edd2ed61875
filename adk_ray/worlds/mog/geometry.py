"""The MoG world's geometry, defined once and free of torch: where p*'s modes sit, the target mode(s)
and the oracle reward's shape (paper §4.1, appendix A.1, eq. 4).

The world's tensors (`truth`) and the dashboard's pictures (`adk_ray.dashboards.mog`) both read it,
so a page draws exactly the world its results came from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MODE_VAR = 0.05
"""Variance of every mode of p* (isotropic covariance 0.05·I, appendix A.1)."""
STD = math.sqrt(MODE_VAR)
GRID_STEPS = (-1, 0, 1)
"""p*'s modes sit on {−s, 0, s}² minus the origin, s the grid spacing."""
TARGET_CELLS = {"single": ((1, -1),), "double": ((1, -1), (0, -1))}
"""Target mode(s) in grid units: the paper's "mode #7" at (s, −s), and for 'double' also its left
neighbour (0, −s). We keep the coordinates, not the paper's numbering."""
DEFAULT_SPACING = 1.5
"""Appendix A.1 places p*'s modes at ±1.5 (mode #7 at (1.5, −1.5))."""
TARGET_RADIUS = 0.5
"""Half-side r of the box [c − r, c + r]² around each target centre c in which a model's target mass is
measured (the premise, docs/mog.md): p*'s target mode holds 97.5% of its own mass there per axis, its
neighbours (≥ 1 grid step away) practically none."""
TRAP_FRACTION = 0.1
"""A seed's p'' is in the low-recall trap when its target mass is below this fraction of p*'s own
(π_ref(y*) ≈ 0, §3.4). Fixed before any sweep was run, not tuned on results."""


@dataclass(frozen=True)
class Geometry:
    """One world's layout and reward."""

    target: str = "single"
    """'single' or 'double' (a key of TARGET_CELLS)."""
    spacing: float = DEFAULT_SPACING
    """Grid spacing s of p*'s modes; appendix A.1 places them at ±1.5."""
    reward_scale: float = 10.0
    """R(x) = reward_scale · exp(−reward_alpha ‖x − c_t‖²), c_t the nearest target centre (eq. 4)."""
    reward_alpha: float = 2.0
    """Sharpness α of the oracle reward (eq. 4)."""

    @property
    def centres(self) -> tuple[tuple[float, float], ...]:
        """p*'s 8 mode centres, x-major over the grid, origin left out."""
        return tuple((i * self.spacing, j * self.spacing) for i in GRID_STEPS for j in GRID_STEPS
                     if (i, j) != (0, 0))

    @property
    def target_centres(self) -> tuple[tuple[float, float], ...]:
        return tuple((i * self.spacing, j * self.spacing) for i, j in TARGET_CELLS[self.target])

    @classmethod
    def of(cls, cfg) -> "Geometry":
        """From anything carrying the trial config's fields (a config, a results row as a dict)."""
        get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
        # results written before grid_spacing existed hold the paper's spacing
        spacing = get("grid_spacing", None)
        return cls(target=get("target"), spacing=DEFAULT_SPACING if spacing is None else float(spacing),
                   reward_scale=get("reward_scale"), reward_alpha=get("reward_alpha"))
