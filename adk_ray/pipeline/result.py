"""What a trial hands back to the service: metric rows and the parameters of the models it made."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrialResult:
    rows: list[dict] = field(default_factory=list)
    """One dict per evaluated model (columns of docs/results.md that the world knows)."""
    models: list[dict] = field(default_factory=list)
    """MoG only: one dict per stored model with its mixture parameters, for the density pictures."""
