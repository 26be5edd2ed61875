"""Preference-Aligned Distillation (PAD) objectives: pure tensor functions.

Reference: "Capturing Nuanced Preferences: Preference-Aligned Distillation for
Small Language Models" (the PAD paper; its §4 is the method). Equation numbers below are
that paper's.

Everything here is stateless: tensors in, tensors out, batched over any number
of leading dimensions; the last dimension indexes the n responses of one prompt.

Conventions
-----------
* ``scores`` are per-response rewards r(y) (already calibrated, for the teacher),
  shape ``[..., n]``. ``beta`` multiplies them inside the Plackett-Luce model.
* A ranking is a LongTensor ``[..., n]`` of response indices, best first:
  ``ranking[..., 0]`` is the index of the response ranked first.
* Losses return a scalar: the mean over every leading (batch) dimension.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch
from torch import Tensor

DEFAULT_BETA = 10.0  # PAD paper Table 4
DEFAULT_ALPHA = 0.8  # PAD paper §5.1

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "all_rankings",
    "calibrated_teacher_reward",
    "decomposed",
    "length_normalised_reward",
    "mc_selection_log_probs",
    "plackett_luce_log_prob",
    "ppd_loss",
    "ranking_distribution_log_probs",
    "teacher_ranking",
    "vpd_loss",
]


# --------------------------------------------------------------------------- #
# Rewards (section 3 and 4.2)
# --------------------------------------------------------------------------- #
def length_normalised_reward(token_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Length-normalised log-likelihood reward, paper Eq. 7.

        r(y | x) = (1 / |y|) * log p(y | x) = (1 / |y|) * sum_t log p(y_t | y_<t, x)

    Args:
        token_logprobs: ``[..., T]`` log p(y_t | y_<t, x) of each response token.
        mask: ``[..., T]`` bool (or 0/1) mask, true on the response's tokens;
            |y| is its row sum. Masked-out positions are ignored even if they
            hold -inf or nan.

    Returns:
        ``[...]`` rewards.

    Raises:
        ValueError: if some row of ``mask`` is empty (|y| = 0 has no reward).
    """
    mask = mask.to(torch.bool)
    length = mask.sum(dim=-1)
    if bool((length == 0).any()):
        raise ValueError("length_normalised_reward: a response has no tokens (|y| = 0)")
    zero = torch.zeros((), dtype=token_logprobs.dtype, device=token_logprobs.device)
    total = torch.where(mask, token_logprobs, zero).sum(dim=-1)
    return total / length.to(token_logprobs.dtype)


def mc_selection_log_probs(
    choice_letter_logits: Tensor, choice_of_response: Tensor | None = None
) -> Tensor:
    """Log multiple-choice selection probability log p_sel, paper Eq. 8.

        p_sel(y_i) = p(c_i | Y_n, C_n, x) = softmax_{c in C_n}(logit(c))[c_i]

    i.e. a log-softmax over the next-token logits of the n choice letters only
    ('A', 'B', 'C', ...), read at the answer position of the MCQ prompt.

    The paper maps responses to letters *in random order* (section 4.2). That
    shuffling is the caller's job: the caller builds the MCQ prompt with the
    responses in a random order, reads the logits of the letters in letter
    order (``choice_letter_logits[..., j]`` = logit of the j-th letter), and
    either maps the result back itself or passes ``choice_of_response``.

    Args:
        choice_letter_logits: ``[..., n]`` logits of the n choice-letter tokens,
            in letter order (A, B, C, ...).
        choice_of_response: optional LongTensor ``[..., n]``;
            ``choice_of_response[..., i]`` is the letter index c_i under which
            response y_i was shown. If given, the output is in *response*
            order; otherwise it stays in letter order.

    Returns:
        ``[..., n]`` log p_sel (log-probabilities summing to 1 over the choices).
    """
    log_p = torch.log_softmax(choice_letter_logits, dim=-1)
    if choice_of_response is not None:
        log_p = log_p.gather(-1, choice_of_response.long())
    return log_p


def calibrated_teacher_reward(
    r_tch: Tensor, log_p_sel: Tensor, alpha: float = DEFAULT_ALPHA
) -> Tensor:
    """Calibrated teacher reward, paper Eq. 9.

        r_hat_tch(y) = (1 - alpha) * r_tch(y) + alpha * log p_sel(y)

    ``alpha = 0`` gives the uncalibrated reward (the MoG world, docs/mog.md);
    ``alpha = 1`` uses the MCQ selection probability alone.

    Args:
        r_tch: ``[..., n]`` teacher length-normalised rewards (Eq. 7).
        log_p_sel: ``[..., n]`` log selection probabilities (Eq. 8), in the same
            response order as ``r_tch``.
        alpha: calibration ratio in [0, 1] (paper default 0.8).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return (1.0 - alpha) * r_tch + alpha * log_p_sel


# --------------------------------------------------------------------------- #
# Plackett-Luce (Eq. 2, 6, 11)
# --------------------------------------------------------------------------- #
def plackett_luce_log_prob(scores: Tensor, ranking: Tensor, beta: float) -> Tensor:
    """Plackett-Luce log-probability of a ranking, paper Eq. 2 (with beta as in Eq. 10/11).

        log p(tau) = sum_{i=1}^{n} [ beta * r(y_(tau_i))
                                     - logsumexp_{j >= i} beta * r(y_(tau_j)) ]

    The suffix log-sum-exps come from the recursion s_n = o_n, s_i = logaddexp(o_i, s_{i+1}) with
    o_i = beta * r(y_(tau_i)): each step is stable (logaddexp shifts by its larger argument), and the
    i = n term, o_n - s_n, is exactly 0. Written as n - 1 elementwise ops on contiguous [...] slices
    because torch.logcumsumexp's CPU kernel (a scalar scan, with a backward of further scans) made
    PPD's loss 5x slower over the [G, n!, n] table of Eq. 11 (benchmarks/mog_step_cost.py,
    "pad_ppd fit"); the two agree to float rounding (tests/test_objectives_pad.py).

    Args:
        scores: ``[..., n]`` rewards r(y_1), ..., r(y_n).
        ranking: LongTensor ``[..., n]`` of response indices, best first. Its
            leading dimensions broadcast against those of ``scores`` (e.g. a
            ``[n!, n]`` table against ``[B, 1, n]`` scores).
        beta: inverse temperature scaling the rewards.

    Returns:
        ``[...]`` log p(tau) (broadcast leading shape).
    """
    shape = torch.broadcast_shapes(scores.shape, ranking.shape)
    s = scores.expand(shape)
    idx = ranking.long().expand(shape)
    ordered = beta * s.gather(-1, idx)  # beta * r(y_(tau_i)), i = 1..n
    # positions first, each a contiguous [...] block: one copy, then every op below is a plain vector op
    o = ordered.movedim(-1, 0).contiguous().unbind(0)
    suffix = o[-1]
    log_p = torch.zeros_like(suffix)
    for o_i in reversed(o[:-1]):
        suffix = torch.logaddexp(o_i, suffix)
        log_p = log_p + (o_i - suffix)
    return log_p


def all_rankings(n: int, device: torch.device | str | None = None) -> Tensor:
    """Every ranking of n responses: LongTensor ``[n!, n]`` (the set T of Eq. 11).

    Rows are ``itertools.permutations(range(n))`` in lexicographic order, so
    row 0 is the identity ranking (0, 1, ..., n-1).
    """
    if n < 1:
        raise ValueError(f"all_rankings needs n >= 1, got {n}")
    perms = list(itertools.permutations(range(n)))
    return torch.tensor(perms, dtype=torch.long, device=device).reshape(math.factorial(n), n)


def ranking_distribution_log_probs(scores: Tensor, beta: float) -> Tensor:
    """Log-probabilities of all n! rankings under Plackett-Luce, paper Eq. 11.

        for all tau in T:  log p(tau) = sum_i [ beta r(y_(tau_i)) - logsumexp_{j>=i} beta r(y_(tau_j)) ]

    Args:
        scores: ``[..., n]`` rewards.
        beta: inverse temperature.

    Returns:
        ``[..., n!]`` log-probabilities, indexed like ``all_rankings(n)``; they
        log-sum-exp to 0 over the last dimension. Cost O(n! * n) per example.
    """
    n = scores.shape[-1]
    rankings = all_rankings(n, device=scores.device)  # [n!, n]
    return plackett_luce_log_prob(scores.unsqueeze(-2), rankings, beta)


def teacher_ranking(teacher_scores: Tensor) -> Tensor:
    """The teacher's single ranking used by VPD: indices sorted by reward, descending.

    Ties are broken by response index (stable sort), so the result is
    deterministic.
    """
    return torch.argsort(teacher_scores, dim=-1, descending=True, stable=True)


# --------------------------------------------------------------------------- #
# Losses (section 4.3)
# --------------------------------------------------------------------------- #
def vpd_loss(student_scores: Tensor, teacher_scores: Tensor, beta: float) -> Tensor:
    """Vanilla Preference Distillation loss, paper Eq. 10 (as a negative log-likelihood).

        tau = argsort_desc(r_hat_tch)
        L_VPD = - sum_{i=1}^{n} log [ exp(beta r_stu(y_(tau_i)))
                                      / sum_{j>=i} exp(beta r_stu(y_(tau_j))) ]
              = - log p_stu(tau)

    Eq. 10 in the paper is printed without the minus sign, but the text calls
    it the NLL loss that "maximize[s] the probability of teacher preference";
    we return the negative log-likelihood, which is what is minimised.

    The teacher enters only through its ranking (a piecewise-constant function
    of its scores), so no gradient flows to ``teacher_scores``.

    Args:
        student_scores: ``[..., n]`` student rewards r_stu.
        teacher_scores: ``[..., n]`` (calibrated) teacher rewards r_hat_tch.
        beta: inverse temperature.

    Returns:
        Scalar: mean over all leading (batch) dimensions.
    """
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(
            f"shape mismatch: student {tuple(student_scores.shape)} "
            f"vs teacher {tuple(teacher_scores.shape)}"
        )
    tau = teacher_ranking(teacher_scores.detach())
    return (-plackett_luce_log_prob(student_scores, tau, beta)).mean()


def _jsd_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-example JSD(P || Q) over the last dimension, from log-probabilities.

        M = (P + Q) / 2,  log M = logaddexp(log P, log Q) - log 2
        JSD = 1/2 sum P (log P - log M) + 1/2 sum Q (log Q - log M)
    """
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=-1)
    return 0.5 * (kl_pm + kl_qm)


def ppd_loss(student_scores: Tensor, teacher_scores: Tensor, beta: float) -> Tensor:
    """Probabilistic Preference Distillation loss, paper Eq. 11-12 (Jensen-Shannon divergence).

        p_tch(tau), p_stu(tau): Plackett-Luce over all tau in T (Eq. 11)
        pi_mix = (p_tch + p_stu) / 2                  (per example)
        L_PPD = 1/2 [ KL(p_tch || pi_mix) + KL(p_stu || pi_mix) ]     (Eq. 12)
        KL(p || pi_mix) = sum_tau p(tau) log( p(tau) / pi_mix(tau) )

    The paper uses the JSD (not a plain KL), so this does too. Everything is
    computed in log space: log pi_mix = logaddexp(log p_tch, log p_stu) - log 2.
    The mixture is formed per example (per prompt); examples are never mixed.
    0 <= L_PPD <= log 2 per example. Gradients flow to both inputs; detach the
    teacher's scores at the call site if they come from a trainable graph.

    Args:
        student_scores: ``[..., n]`` student rewards r_stu.
        teacher_scores: ``[..., n]`` (calibrated) teacher rewards r_hat_tch.
        beta: inverse temperature (shared by both distributions, as in Eq. 11).

    Returns:
        Scalar: mean over all leading (batch) dimensions of the per-example JSD.
    """
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(
            f"shape mismatch: student {tuple(student_scores.shape)} "
            f"vs teacher {tuple(teacher_scores.shape)}"
        )
    log_p_tch = ranking_distribution_log_probs(teacher_scores, beta)
    log_p_stu = ranking_distribution_log_probs(student_scores, beta)
    return _jsd_from_log_probs(log_p_tch, log_p_stu).mean()


# --------------------------------------------------------------------------- #
# Preference decomposition (section 4.4, Appendix A)
# --------------------------------------------------------------------------- #
LossFn = Callable[[Tensor, Tensor, float], Tensor]


def decomposed(
    loss_fn: LossFn,
    student_scores: Tensor,
    teacher_scores: Tensor,
    beta: float,
    group_size: int,
) -> Tensor:
    """Preference decomposition, paper Eq. 13-14 and Appendix A.

        phi(tau_n) = {tau_m^(1), ..., tau_m^(k)},   k = n / m
        p(phi(tau_n)) = prod_{g=1}^{k} p(tau_m^(g))                      (Eq. 13)
        L_decomposed = sum_{g=1}^{k} loss_fn(group g)                    (Eq. 14)

    The n responses are split into k = n / m groups of m *consecutive*
    responses (group g holds responses g*m, ..., g*m + m - 1; shuffle before
    calling if the order of responses is meaningful), and the per-group losses
    are summed. Each per-group loss is itself a mean over the batch.

    For VPD this is exactly the NLL of the decomposed preference (Eq. 14): the
    teacher's ranking within each group is the restriction of its full ranking
    to that group. For PPD it is the sum of per-group JSDs, which equals the
    JSD of the product distributions under the paper's independence
    assumption (Appendix A; the proof treats the mixture as factorising over
    groups too). With m = n it is the undecomposed loss.

    Args:
        loss_fn: ``vpd_loss`` or ``ppd_loss`` (any ``f(student, teacher, beta)``).
        student_scores, teacher_scores: ``[..., n]``.
        beta: inverse temperature.
        group_size: m, which must divide n.

    Raises:
        ValueError: if m < 1 or m does not divide n.
    """
    n = student_scores.shape[-1]
    if teacher_scores.shape[-1] != n:
        raise ValueError(
            f"student has {n} responses but teacher has {teacher_scores.shape[-1]}"
        )
    m = int(group_size)
    if m < 1 or n % m != 0:
        raise ValueError(f"group_size m={group_size} must be >= 1 and divide n={n}")
    total = None
    for start in range(0, n, m):
        part = loss_fn(
            student_scores[..., start : start + m],
            teacher_scores[..., start : start + m],
            beta,
        )
        total = part if total is None else total + part
    return total
