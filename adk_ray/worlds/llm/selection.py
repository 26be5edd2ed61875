"""Model selection of an LLM alignment run (paper appendix C.4): which saved checkpoint
is the aligned model. Early stopping against mode collapse, as code over the run's curve. RULES by
name (each aligner names its rule in `aligners.ALIGNERS`):

    reward_before_std_drop  PPO's: the checkpoint of highest (smoothed) mean reward taken *before* the
                            reward's (smoothed) std falls sharply: the paper reads that fall as the onset
                            of mode collapse (Fig. 13). GRPO borrows it: the paper has no LLM GRPO run,
                            and GRPO maximises the same folded reward and collapses the same way.
    max_margin              DPO's: the checkpoint of maximal (smoothed) chosen-minus-rejected margin
                            β·Δlog-ratio, the point of peak preference discrimination (Fig. 14). IPO,
                            which the paper does not run, borrows it.

Every curve point is one iteration (`step`), its metrics averaged over that iteration's samples; the
rules read a trailing moving average of `selection_window` points, because one iteration's batch (64
responses at full scale) makes a noisy std. Ties go to the earliest checkpoint: the less-trained model,
closer to π_ref and so no less diverse.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from adk_ray.worlds.llm.presets import AlignSettings

def moving_average(x: Sequence[float], window: int) -> np.ndarray:
    """m_i = mean(x_{max(0, i−w+1)}, …, x_i): a trailing average, so m_i uses no point after i (a
    checkpoint is judged on what was known when it was saved); the first w−1 points average fewer."""
    x = np.asarray(x, dtype=np.float64)
    w = max(1, int(window))
    # Window by window, not by a running sum: a NaN point then spoils only the w averages that contain it.
    return np.array([x[max(0, i - w + 1):i + 1].mean() for i in range(len(x))])


def std_fall_index(std: Sequence[float], ratio: float) -> int | None:
    """The first i ≥ 1 with s_i < ratio · max_{j<i} s_j (the std "falls sharply"), or None."""
    s = np.asarray(std, dtype=np.float64)
    for i in range(1, len(s)):
        if s[i] < ratio * np.max(s[:i]):
            return i
    return None


def _at_steps(curve: list[dict], key: str, smoothed: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    index = {int(row["step"]): i for i, row in enumerate(curve)}
    missing = [s for s in steps if int(s) not in index]
    if missing:
        raise ValueError(f"checkpoint step(s) {missing} have no {key} on the curve (steps "
                         f"{curve[0]['step'] if curve else '-'}…{curve[-1]['step'] if curve else '-'})")
    vals = smoothed[[index[int(s)] for s in steps]]
    return np.where(np.isfinite(vals), vals, -np.inf)          # a diverged (NaN) point is never preferred


def select_reward_before_std_drop(curve: list[dict], checkpoint_steps: Sequence[int],
                                  settings: AlignSettings) -> tuple[int, str]:
    """PPO's rule (and GRPO's). With m, s the trailing `selection_window` averages of reward_mean and
    reward_std: the fall is at the first step i with s_i < std_drop_ratio · max_{j<i} s_j; among the
    checkpoints saved strictly before it (all of them if the std never falls, the first checkpoint if
    none is before it) keep argmax m (the earliest on a tie)."""
    w, ratio = settings.selection_window, settings.std_drop_ratio
    mean = moving_average([row["reward_mean"] for row in curve], w)
    std = moving_average([row["reward_std"] for row in curve], w)
    steps = sorted(int(s) for s in checkpoint_steps)
    fall = std_fall_index(std, ratio)
    if fall is None:
        candidates, why = steps, f"the smoothed reward std never falls below {ratio:g}× its running max"
    else:
        fall_step = int(curve[fall]["step"])
        peak = float(np.max(std[:fall]))
        why = (f"the smoothed reward std falls at step {fall_step} ({std[fall]:.4g} < {ratio:g} × "
               f"{peak:.4g})")
        candidates = [s for s in steps if s < fall_step]
        if not candidates:
            best = steps[0]
            return best, f"{why}, before any checkpoint: keeping the first one, step {best}"
    vals = _at_steps(curve, "reward_mean", mean, candidates)
    best = candidates[int(np.argmax(vals))]
    return best, (f"{why}; among the {len(candidates)} checkpoint(s) before it step {best} has the highest "
                  f"smoothed mean reward {vals.max():.4g} (window {w})")


def select_max_margin(curve: list[dict], checkpoint_steps: Sequence[int],
                      settings: AlignSettings) -> tuple[int, str]:
    """DPO's rule: argmax over checkpoints of the trailing `selection_window` average of the margin
    β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))] (the earliest on a tie)."""
    w = settings.selection_window
    margin = moving_average([row["margin"] for row in curve], w)
    steps = sorted(int(s) for s in checkpoint_steps)
    vals = _at_steps(curve, "margin", margin, steps)
    best = steps[int(np.argmax(vals))]
    value = vals.max()
    shown = f"{value:.4g}" if math.isfinite(value) else "non-finite"
    return best, f"step {best} has the highest smoothed DPO margin {shown} of {len(steps)} checkpoint(s) (window {w})"


RULES: dict[str, Callable[[list[dict], Sequence[int], AlignSettings], tuple[int, str]]] = {
    "reward_before_std_drop": select_reward_before_std_drop,
    "max_margin": select_max_margin,
}
"""Rule name -> rule(curve, checkpoint steps, settings) -> (selected step, reason)."""


def select_by_rule(rule: str, curve: list[dict], checkpoint_steps: Sequence[int],
                   settings: AlignSettings) -> tuple[int, str]:
    """(selected step, a human-readable reason) by the rule named `rule` over this curve and these saved
    checkpoints, after checking every checkpoint has its point on the curve."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; valid: {', '.join(RULES)}")
    if not checkpoint_steps:
        raise ValueError("no checkpoints to select from")
    on_curve = {int(row["step"]) for row in curve}
    missing = sorted(int(st) for st in checkpoint_steps if int(st) not in on_curve)
    if missing:
        raise ValueError(f"checkpoint step(s) {missing} have no point on the curve")
    return RULES[rule](curve, checkpoint_steps, settings)
