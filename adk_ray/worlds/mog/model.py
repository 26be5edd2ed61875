"""A batched Mixture of Gaussians (the paper's `MoGModel`): exact log-density and sampling.

Parameters are a dict of tensors with a leading trial axis T, so one optimiser step trains every
seed and grid point at once:
    logits      [T, K]     mixture logits (weights α = softmax(logits))
    means       [T, K, 2]  component centres
    log_scales  [T, K, 2]  per-axis log standard deviations (diagonal covariance)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from adk_ray.worlds.mog.noise import normal_to_uniform

Params = dict[str, Tensor]
LOG_2PI = math.log(2 * math.pi)
UNDERFLOW = -87.0  # exp(z) is a normal float32 for z ≥ −87.33 (log of finfo(float32).tiny)


def log_prob(params: Params, x: Tensor, logits: Tensor | None = None) -> Tensor:
    """log q(x) = logsumexp_k [log α_k + Σ_d log N(x_d; μ_kd, σ_kd²)] for x [T, N, 2] → [T, N].

    The Gaussian exponent is expanded, −½ Σ_d (x_d² w_kd − 2 x_d μ_kd w_kd + μ_kd² w_kd) with w = σ⁻²,
    so the [T, N, K] component table is one batched matmul of features (x², x, 1) by per-component
    coefficients: 2.5× faster forward and backward than broadcasting (x − μ)/σ over [T, N, K, 2].
    `coefficients` and `features` are its two halves, for callers that reuse one of them (a frozen
    model's coefficients across steps, one batch's features across models).
    """
    return log_prob_of(coefficients(params, logits), features(x))


def coefficients(params: Params, logits: Tensor | None = None) -> Tensor:
    """[T, K, 5]: each component's coefficients of the features (x², x, 1) in its log-density."""
    logits = params["logits"] if logits is None else logits
    mu, log_s = params["means"], params["log_scales"]                       # [T, K, 2]
    w = torch.exp(-2 * log_s)
    const = (-0.5 * mu * mu * w - log_s).sum(-1) - LOG_2PI + torch.log_softmax(logits, -1)   # [T, K]
    return torch.cat([-0.5 * w, mu * w, const[..., None]], -1)


def features(x: Tensor) -> Tensor:
    """[T, N, 5]: the features (x², x, 1) of points x [T, N, 2]."""
    # filled in place: a last-axis cat of 2-wide parts costs ~1.5× this
    out = torch.ones((*x.shape[:-1], 5), dtype=x.dtype)
    out[..., :2] = x * x
    out[..., 2:4] = x
    return out


def log_prob_of(coef: Tensor, feats: Tensor) -> Tensor:
    """`log_prob` from its two halves: [T, K, 5] coefficients, [T, N, 5] features → [T, N]."""
    comp = torch.bmm(feats, coef.transpose(1, 2))                            # [T, N, K]
    # logsumexp by hand with a detached max: same value, one fewer pass in backward than torch.logsumexp
    m = comp.detach().amax(-1, keepdim=True)
    return _exp_clamped(comp - m).sum(-1).log() + m.squeeze(-1)


def _exp_clamped(z: Tensor) -> Tensor:
    """exp(max(z, UNDERFLOW)) for the z ≤ 0 of a log-sum-exp whose largest term is exp(0) = 1.

    CPU exp takes a slow path for inputs whose result is subnormal or 0 (−inf included: the padded
    components), 20–200× slower per element, and the subnormals it returns slow the backward products
    too; far components make a good share of a log_prob table such inputs. Added to the max term 1,
    any term below exp(UNDERFLOW) ≈ 1.6e-38 rounds away, so log_prob's value is the same to the last
    bit; the gradient of such a term is 0 instead of subnormal (tests/test_mog_world.py bounds it).
    """
    return z.clamp_min(UNDERFLOW).exp()


def sample(params: Params, noise: Tensor, logits: Tensor | None = None) -> Tensor:
    """Draw x [T, N, 2] from the mixture given standard normal noise [T, N, 3].

    noise[..., 0] picks the component (through Φ, inverse-CDF on the weights), noise[..., 1:] places
    the point. `logits` overrides the mixture weights (KD sampling with sharpened weights, eq. 7). No
    gradient flows into samples: every aligner here is a score-function method. A model sampled many
    times (a frozen teacher) takes `sampler` once and `draw` per batch instead.
    """
    return draw(sampler(params, logits), noise)


Sampler = tuple[Tensor, Tensor]
"""What `draw` inverts: the inner cumulative weights [T, K−1, 1] and each component's (μ, σ) [T, K, 4]."""


def sampler(params: Params, logits: Tensor | None = None) -> Sampler:
    """`params` (with `logits` as its weights if given) ready for `draw`: its cumulative weights and its
    components' centres beside their standard deviations, so a draw is one gather and no exp."""
    with torch.no_grad():
        cdf = weights_cdf(params, logits)
        return cdf[:, :-1, None].contiguous(), torch.cat([params["means"], params["log_scales"].exp()], -1)


def draw(s: Sampler, noise: Tensor) -> Tensor:
    """x [T, N, 2] = μ_k + σ_k · noise[..., 1:], k = #{j < K−1 : cdf_j < Φ(noise[..., 0])}."""
    inner_cdf, components = s
    with torch.no_grad():
        u = normal_to_uniform(noise[..., 0])                                  # [T, N]
        # k by K − 1 comparisons in one op (2–3× faster than searchsorted's binary search for K ≤ 8);
        # an inverse CDF clamped to K − 1, where rounding leaves the last cumulative weight below u
        k = (u[:, None, :] > inner_cdf).sum(1)                                # [T, N]
        picked = torch.gather(components, 1, k[..., None].expand(-1, -1, 4))  # [T, N, (μ, σ)]
        return picked[..., :2] + picked[..., 2:] * noise[..., 1:]


def weights_cdf(params: Params, logits: Tensor | None = None) -> Tensor:
    """[T, K]: cumulative mixture weights, what `sample` inverts."""
    with torch.no_grad():
        return torch.cumsum(torch.softmax(params["logits"] if logits is None else logits, -1), -1)


def weights(params: Params) -> Tensor:
    return torch.softmax(params["logits"], -1)


def detach(params: Params) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


def trainable(params: Params) -> Params:
    return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}


def index(params: Params, idx: Tensor | list[int]) -> Params:
    """Select trials along the leading axis (e.g. gather each trial's reference by seed)."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    return {k: v[idx] for k, v in params.items()}


def cat(parts: list[Params]) -> Params:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def pad_components(params: Params, n_components: int) -> Params:
    """The same mixture with extra components of weight exactly 0 (logit −inf), up to n_components.

    A K''-component model padded to K' components batches with K'-component ones in one optimiser
    step: its density, samples and gradients are unchanged (exp(−inf) = 0 in every sum, and a zero
    gradient leaves Adam's update at 0), so K-A and A-K align in one call.
    """
    T, K = params["logits"].shape
    extra = n_components - K
    if extra <= 0:
        return params
    # The padding copies the last component: where rounding lets inverse-CDF sampling step past the
    # real weights, it lands on a copy of the component it would have clamped to unpadded.
    return {"logits": torch.cat([params["logits"], torch.full((T, extra), -torch.inf)], 1),
            "means": torch.cat([params["means"], params["means"][:, -1:].expand(T, extra, 2)], 1),
            "log_scales": torch.cat([params["log_scales"], params["log_scales"][:, -1:].expand(T, extra, 2)], 1)}


def first_components(params: Params, n_components: int) -> Params:
    """Drop the padding `pad_components` added."""
    return {"logits": params["logits"][:, :n_components], "means": params["means"][:, :n_components],
            "log_scales": params["log_scales"][:, :n_components]}


def init_from_samples(points: Tensor, init_scale: float) -> Params:
    """Equal weights, centres at K given points [T, K, 2], isotropic scale `init_scale`.

    Starting the centres on K data points (the usual random-restart initialisation of a GMM) lets
    the seed decide which of p*'s 8 modes a 6-component fit keeps, as in the paper's Figure 1.
    """
    T, K, _ = points.shape
    return {"logits": torch.zeros(T, K), "means": points.clone(),
            "log_scales": torch.full((T, K, 2), math.log(init_scale))}
