"""A tiny numpy Mixture of Gaussians for the density pictures (no torch in the dashboard layer).

p*, the target centres and the reward come from the world's own torch-free `Geometry` (appendix A.1,
eq. 4), so a page draws the world its results were made in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adk_ray.worlds.mog.geometry import STD, Geometry

__all__ = ["STD", "Geometry", "Mixture", "P_STAR", "p_star", "reward", "density_grid"]
SAMPLE_SEED = 0


@dataclass(frozen=True)
class Mixture:
    weights: np.ndarray  # (K,)
    means: np.ndarray    # (K, 2)
    scales: np.ndarray   # (K, 2) per-axis standard deviations

    @classmethod
    def from_flat(cls, weights, means, scales) -> "Mixture":
        """From a models/*.parquet row: K weights, K*2 means and K*2 scales, row-major."""
        w = np.asarray(weights, dtype=float)
        w = np.clip(w, 0, None)
        w = w / w.sum() if w.sum() > 0 else np.full_like(w, 1.0 / max(len(w), 1))
        k = len(w)
        return cls(w, np.asarray(means, dtype=float).reshape(k, 2), np.asarray(scales, dtype=float).reshape(k, 2))

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """log q(x) for points x of shape (N, 2), via log-sum-exp over components."""
        z = (x[:, None, :] - self.means[None]) / self.scales[None]
        log_comp = (-0.5 * (z ** 2).sum(-1) - np.log(self.scales).sum(-1)[None] - np.log(2 * np.pi)
                    + np.log(np.maximum(self.weights, 1e-300))[None])
        m = log_comp.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(log_comp - m).sum(axis=1, keepdims=True)))[:, 0]

    def sample(self, n: int, seed: int = SAMPLE_SEED) -> np.ndarray:
        rng = np.random.default_rng(seed)
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[k] + self.scales[k] * rng.standard_normal((n, 2))


def p_star(geometry: Geometry) -> Mixture:
    """The ground truth of `geometry`: 8 equal-weight modes of std √0.05."""
    centres = np.array(geometry.centres, dtype=float)
    return Mixture(np.full(len(centres), 1 / len(centres)), centres, np.full(centres.shape, STD))


P_STAR = p_star(Geometry())
"""p* of the paper's geometry (appendix A.1)."""


def reward(x: np.ndarray, geometry: Geometry | str = Geometry()) -> np.ndarray:
    """R(x) = scale·exp(−α‖x − c‖²), c the nearest target centre (eq. 4); a string names the target
    of the default geometry."""
    g = Geometry(target=geometry) if isinstance(geometry, str) else geometry
    c = np.array(g.target_centres, dtype=float)
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1).min(axis=1)
    return g.reward_scale * np.exp(-g.reward_alpha * d2)


def density_grid(mix: Mixture, lim: float = 3.0, n: int = 121) -> tuple[np.ndarray, np.ndarray]:
    """Axis ticks and the density q on an n×n grid over [−lim, lim]² (z[i, j] at y=ticks[i], x=ticks[j])."""
    t = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(t, t)
    z = np.exp(mix.log_density(np.stack([xx.ravel(), yy.ravel()], axis=1))).reshape(n, n)
    return t, z
