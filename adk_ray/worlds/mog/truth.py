"""The world's fixed parts as tensors: ground truth p*, the target distribution and the oracle reward
(paper §4.1, appendix A.1), built from the one `Geometry`."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from adk_ray.worlds.mog import model
from adk_ray.worlds.mog.geometry import MODE_VAR, Geometry


def _mixture(centres, T: int) -> model.Params:
    c = torch.tensor(centres)
    K = c.shape[0]
    return {"logits": torch.zeros(T, K), "means": c.expand(T, K, 2).clone(),
            "log_scales": torch.full((T, K, 2), 0.5 * math.log(MODE_VAR))}


def ground_truth(geometry: Geometry, T: int = 1) -> model.Params:
    """p*: uniform mixture of 8 isotropic Gaussians, covariance 0.05·I (paper appendix A.1)."""
    return _mixture(geometry.centres, T)


def target_distribution(geometry: Geometry, T: int = 1) -> model.Params:
    """p_target: N(c_t, 0.05·I) at the target centre; for 'double', the equal mixture of both."""
    return _mixture(geometry.target_centres, T)


class Reward:
    """R(x) = scale · exp(−α ‖x − c_t‖²) (paper eq. 4/8), c_t the nearest target centre ('double')."""

    def __init__(self, geometry: Geometry):
        self.centres = torch.tensor(geometry.target_centres)
        self.scale, self.alpha = geometry.reward_scale, geometry.reward_alpha

    def __call__(self, x: Tensor) -> Tensor:
        d2 = ((x[..., None, :] - self.centres) ** 2).sum(-1).min(-1).values
        return self.scale * torch.exp(-self.alpha * d2)
