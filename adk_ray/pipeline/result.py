"""What a trial hands back to the service: metric rows and the parameters of the models it made."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrialResult:
    rows: list[dict] = field(default_factory=list)
    """One dict per evaluated model (columns of docs/results.md that the world knows)."""
    models: list[dict] = field(default_factory=list)
    """MoG only: one dict per stored model with its mixture parameters, for the density pictures."""
    samples: list[dict] = field(default_factory=list)
    """LLM only: a few decoded samples per token set and per evaluated model (`model` p*, p', p'', p''_KA,
    p'_AK, p''_AK; '' for training sets), with `nll_target` and `reward` (docs/llm.md, "Text samples")."""
