"""Names, labels and colours shared by every figure and table of the dashboard."""
from __future__ import annotations

from adk_ray.columns import METRICS, PIPELINES  # noqa: F401 - re-exported for the figures

# The paper's colours: K-A red, A-K blue. Fixed, so a reader never has to check the legend.
PIPELINE_COLOURS = {"K-A": "#d62728", "A-K": "#1f77b4"}
FILL = {"K-A": "rgba(214,39,40,0.18)", "A-K": "rgba(31,119,180,0.18)"}
TARGET_GREEN = "#2ca02c"

METRIC_LABELS = {
    "final_average_reward": "Final Average Reward",
    "target_precision": "Target Precision",
    "overall_recall": "Overall Recall",
    "overall_precision": "Overall Precision",
}

AXIS_LABELS = {
    "beta": "β",
    "iterations": "iterations",
    "kd_beta": "β_KD",
    "n_final_modes": "final modes K",
    "kd_method": "KD method",
    "tau": "τ",
    "kd_tau": "τ (final KD)",
    "target": "target",
    "algorithm": "algorithm",
    "grpo_kl": "GRPO KL",
    "grid_spacing": "grid spacing",
}

# Columns of docs/results.md that are not parameters of a trial: everything else in a row is a
# swept or fixed parameter, which is how sections are inferred when sweep.json is missing.
BOOKKEEPING = {
    "sweep", "trial_id", "world", "pipeline", "stage", "seed", "step", "status", "error",
    "wall_seconds", "config_json", "code_version", *METRICS,
    "selected_step",  # LLM: the checkpoint a selection rule picked, an outcome and not a swept setting
    # MoG: per-model outcomes (docs/results.md), not settings
    "precision_se", "recall_se", "target_mass", "reward_hit_share", "trap",
}

STAGE_LABELS = {
    "p_prime": "p′", "p_dprime": "p″", "aligned": "p′_AK", "final": "final", "curve": "curve",
}


def axis_label(axis: str) -> str:
    return AXIS_LABELS.get(axis, axis)


def fmt_value(v) -> str:
    """A parameter value as an x-axis category: 300 not 300.0, 0.05 not 0.05000000000000000277."""
    if isinstance(v, bool):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return f"{f:g}"


def fmt_num(v, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    if f != f:  # NaN
        return "–"
    return f"{f:.{digits}g}" if abs(f) >= 1e4 or (f != 0 and abs(f) < 1e-3) else f"{f:.{digits}f}"
