"""A tiny numpy Mixture of Gaussians for the density pictures (no torch in the dashboard layer).

Mirrors the paper's appendix A.1: p* is the uniform mixture of 8 isotropic Gaussians, covariance 0.05·I,
centred on {−1.5, 0, 1.5}² minus the origin; R(x) = scale·exp(−α‖x − c_t‖²) with the nearest
target centre when there are two targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = (-1.5, 0.0, 1.5)
CENTRES = np.array([(x, y) for x in GRID for y in GRID if (x, y) != (0.0, 0.0)])
STD = float(np.sqrt(0.05))
TARGET_CENTRES = {"single": np.array([[1.5, -1.5]]), "double": np.array([[1.5, -1.5], [0.0, -1.5]])}
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


P_STAR = Mixture(np.full(8, 1 / 8), CENTRES.astype(float), np.full((8, 2), STD))


def reward(x: np.ndarray, target: str = "single", scale: float = 10.0, alpha: float = 2.0) -> np.ndarray:
    """R(x) = scale·exp(−α‖x − c‖²), c the nearest target centre (eq. 4)."""
    c = TARGET_CENTRES.get(target, TARGET_CENTRES["single"])
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1).min(axis=1)
    return scale * np.exp(-alpha * d2)


def density_grid(mix: Mixture, lim: float = 3.0, n: int = 121) -> tuple[np.ndarray, np.ndarray]:
    """Axis ticks and the density q on an n×n grid over [−lim, lim]² (z[i, j] at y=ticks[i], x=ticks[j])."""
    t = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(t, t)
    z = np.exp(mix.log_density(np.stack([xx.ravel(), yy.ravel()], axis=1))).reshape(n, n)
    return t, z
