"""The names every layer shares: the four metrics, the two pipelines, the stages a row can hold.

Defined once here (the worlds write them, the service types them, the dashboards draw them), in the
order of the paper's boxplot panels.
"""
from __future__ import annotations

METRICS = ("final_average_reward", "target_precision", "overall_recall", "overall_precision")
"""Paper §4.1, eq. 5–6: Final Average Reward E_{x~q}[R(x)], Target Precision E_{x~q}[log p_target(x)],
Overall Recall E_{x~p*}[log q(x)], Overall Precision E_{x~q}[log p*(x)]."""

PIPELINES = ("K-A", "A-K")
"""K-A: distil, then align the distilled model (π_ref = p''). A-K: align p' (π_ref = p'), then distil."""

MOG_EVAL_COLUMNS = ("precision_se", "recall_se", "target_mass", "reward_hit_share")
"""What the MoG world's evaluation adds to the metrics, per model (docs/results.md): the Monte-Carlo
standard errors of Overall Precision and Recall, the exact target mass and the sampling-trap figure."""

MOG_PREMISE_COLUMNS = ("trap",)
"""Per (seed, p''): whether that seed's p'' lost the target mode (docs/mog.md, "The premise"); every
row of the seed's models carries it."""
