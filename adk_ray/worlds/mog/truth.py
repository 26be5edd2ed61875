"""The world's fixed parts: ground truth p*, the target distribution and the oracle reward (paper §4.1, appendix A.1)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from adk_ray.worlds.mog import model

MODE_VAR = 0.05
GRID = (-1.5, 0.0, 1.5)
# The paper names its target "mode #7 located at [1.5, −1.5]"; we keep the coordinates, not a numbering.
CENTRES = torch.tensor([(x, y) for x in GRID for y in GRID if (x, y) != (0.0, 0.0)])
TARGETS = {"single": torch.tensor([[1.5, -1.5]]), "double": torch.tensor([[1.5, -1.5], [0.0, -1.5]])}


def _mixture(centres: Tensor, T: int) -> model.Params:
    K = centres.shape[0]
    return {"logits": torch.zeros(T, K), "means": centres.expand(T, K, 2).clone(),
            "log_scales": torch.full((T, K, 2), 0.5 * math.log(MODE_VAR))}


def ground_truth(T: int = 1) -> model.Params:
    """p*: uniform mixture of 8 isotropic Gaussians, covariance 0.05·I (paper appendix A.1)."""
    return _mixture(CENTRES, T)


def target_distribution(target: str, T: int = 1) -> model.Params:
    """p_target: N(c_t, 0.05·I) at (1.5, −1.5); for 'double', the equal mixture with (0, −1.5)."""
    return _mixture(TARGETS[target], T)


def reward(x: Tensor, target: str, scale: float = 10.0, alpha: float = 2.0) -> Tensor:
    """R(x) = 10 · exp(−α ‖x − c_t‖²), α = 2 (paper eq. 4/8); nearest target centre for 'double'."""
    d2 = ((x[..., None, :] - TARGETS[target]) ** 2).sum(-1).min(-1).values
    return scale * torch.exp(-alpha * d2)
