"""Settings of one MoG trial: every number of the paper's §4.1 and appendix A.

A trial is one point of a sweep's grid with *all its seeds and all its iteration counts* batched
together: the alignment run of the longest iteration count is snapshotted at the shorter ones,
since a run of N iterations is exactly the first N steps of a longer run (constant learning rate,
draws keyed by step).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adk_ray.worlds.mog.aligners import ALIGNERS, GRPO_KL_FORMS
from adk_ray.worlds.mog.geometry import DEFAULT_SPACING, TARGET_CELLS
from adk_ray.worlds.mog.kd_methods import KD_METHODS
from adk_ray.worlds.mog.slices import slice_of


@dataclass(frozen=True)
class MoGTrialConfig:
    algorithm: str = "ppo"
    """Aligner, a key of `aligners.ALIGNERS`: 'ppo' (learned critic, clipped surrogate), 'grpo'
    (batch-mean baseline), 'dpo_online' (fresh pairs from the policy each step), 'dpo_offline'
    (static pairs from π_ref), and their kin listed there."""
    beta: float = 1.0
    """KL coefficient β of the aligner (PPO/GRPO KL penalty, DPO temperature)."""
    iterations: tuple[int, ...] = (300,)
    """Alignment iteration counts; one final model per value, all cut from one run."""
    seeds: tuple[int, ...] = tuple(range(20))
    """Independent seeds; every draw (data, init, sampling) derives from the seed."""
    kd_beta: float = 1.25
    """β_KD ≥ 1 sharpening p' mixture weights before KD sampling (eq. 7)."""
    n_final_modes: int = 4
    """Components K of the compact model p'' (4 or 3 in the paper)."""
    n_sft_modes: int = 6
    """Components of the high-recall model p'."""
    target: str = "single"
    """'single': mode #7 at (1.5, −1.5); 'double': that mode and its left neighbour (0, −1.5)."""
    kd_method: str = "seqkd"
    """How every KD stage distils, a key of `kd_methods.KD_METHODS`: 'seqkd' (max-likelihood on
    teacher samples), 'pad_vpd', 'pad_ppd'."""
    final_kd_method: str = ""
    """The A-K final KD's method when it differs from kd_method ('' follows kd_method)."""
    # -- fitting stages (stages.FitSettings, pad_kd.PADSettings)
    sft_iterations: int = 2000
    """Adam steps fitting p' to samples of p*."""
    kd_iterations: int = 2000
    """Adam steps of each KD stage (p'' and the final KD of A-K)."""
    lr: float = 1e-2
    """Adam learning rate of every stage (appendix A.2)."""
    batch_size: int = 256
    """Samples per step for every stage; DPO draws batch_size pairs."""
    # -- aligners' own settings (their slices in aligners.ALIGNERS)
    ppo_clip: float = 0.2
    """PPO clipping ε."""
    ppo_epochs: int = 1
    """PPO passes over each sampled batch."""
    ppo_minibatches: int = 4
    """Minibatches per PPO pass; >1 makes the ratio (and so the clip) matter after the first."""
    grpo_std_normalize: bool = False
    """Divide the GRPO advantage by the batch reward std."""
    grpo_kl: str = "reverse"
    """GRPO's KL term, a key of `aligners.GRPO_KL_FORMS`: 'reverse' (gradient of KL(π_θ‖π_ref), the anchor
    the paper's §3.4 says GRPO keeps) or 'k3' (β·k3 as a loss term, the GRPO paper's and TRL's form, whose
    on-policy gradient is that of the forward KL(π_ref‖π_θ))."""
    dpo_offline_pairs: int = 2560
    """Size of the static preference set drawn once from π_ref (every off-policy pair aligner)."""
    # -- geometry and metrics (geometry.Geometry, stages.evaluate)
    grid_spacing: float = DEFAULT_SPACING
    """Spacing s of p*'s grid of modes {−s, 0, s}² minus the origin; appendix A.1's ±1.5 by default
    (the paper's Figure 1 numbers match s = 1.0, docs/mog.md)."""
    reward_scale: float = 10.0
    """R(x) = reward_scale · exp(−reward_alpha ‖x − c_t‖²) (eq. 4)."""
    reward_alpha: float = 2.0
    """Sharpness α of the oracle reward (eq. 4)."""
    eval_samples: int = 4096
    """Monte-Carlo samples per metric estimate (eq. 5–6)."""
    eval_every: int = 0
    """Learning-curve interval in alignment steps (0: no curve rows)."""
    # -- PAD (pad_kd.PADSettings)
    pad_n: int = 4
    """PAD: responses per group the student samples (PAD paper §4.1)."""
    pad_beta: float = 10.0
    """PAD: Plackett–Luce inverse temperature β."""
    pad_temperature: float = 0.8
    """PAD: sampling temperature of the student's responses."""

    def __post_init__(self) -> None:
        # Tuples, so the frozen config hashes; lists arrive from YAML.
        as_seq = lambda v: v if isinstance(v, (list, tuple)) else (v,)
        object.__setattr__(self, "iterations", tuple(sorted({int(i) for i in as_seq(self.iterations)})))
        object.__setattr__(self, "seeds", tuple(int(s) for s in as_seq(self.seeds)))
        problems = [f"{name} {getattr(self, name)!r} is not one of {_listing(valid)}"
                    for name, valid in _choices().items() if getattr(self, name) not in valid]
        problems += [f"{name} must be > 0, got {getattr(self, name)}" for name in POSITIVE
                     if not float(getattr(self, name)) > 0]
        problems += [f"{name} must be >= 1, got {getattr(self, name)}" for name in AT_LEAST_ONE
                     if int(getattr(self, name)) < 1]
        problems += [text for ok, text in self._relations() if not ok]
        if not problems:
            # The settings slices check what only they know (e.g. PAD's group size against the batch).
            try:
                slice_of(ALIGNERS[self.algorithm].settings, self)
                for method in {self.kd_method, self.final_kd}:
                    slice_of(KD_METHODS[method].settings, self)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            raise ValueError("; ".join(problems))

    def _relations(self):
        """(holds, message) for each constraint that ties fields together."""
        seeds, iterations = self.seeds, self.iterations
        return [
            (self.kd_beta >= 1, f"kd_beta must be >= 1, got {self.kd_beta}"),
            (bool(iterations) and min(iterations) >= 1, f"iterations must be positive integers, got {list(iterations)}"),
            (bool(seeds), "seeds must name at least one seed"),
            (len(set(seeds)) == len(seeds) and min(seeds, default=0) >= 0,
             f"seeds must be distinct non-negative integers, got {list(seeds)}"),
            (1 <= self.n_final_modes <= self.n_sft_modes,
             f"n_final_modes must be in 1..n_sft_modes={self.n_sft_modes}, got {self.n_final_modes}"),
            (self.batch_size % max(self.ppo_minibatches, 1) == 0,
             f"batch_size {self.batch_size} is not divisible by ppo_minibatches {self.ppo_minibatches}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
        ]

    @classmethod
    def from_dict(cls, d: dict) -> "MoGTrialConfig":
        """Build from a plain dict, rejecting unknown keys with the list of valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        if set(d) - set(names):
            raise ValueError(f"unknown key(s) {', '.join(sorted(set(d) - set(names)))}; "
                             f"valid keys: {', '.join(names)}")
        return cls(**d)

    @property
    def final_kd(self) -> str:
        """The method of the A-K final KD."""
        return self.final_kd_method or self.kd_method

    def replace(self, **kw) -> "MoGTrialConfig":
        return dataclasses.replace(self, **kw)


POSITIVE = ("beta", "lr", "ppo_clip", "reward_scale", "reward_alpha", "pad_beta", "pad_temperature", "grid_spacing")
AT_LEAST_ONE = ("sft_iterations", "kd_iterations", "batch_size", "eval_samples", "ppo_epochs", "ppo_minibatches",
                "dpo_offline_pairs", "pad_n", "n_sft_modes")


def _listing(names) -> str:
    return ", ".join(n or "''" for n in names)


def _choices() -> dict[str, tuple]:
    """Fields whose value names a table entry; the tables' keys are the valid names."""
    return {"algorithm": tuple(ALIGNERS), "target": tuple(TARGET_CELLS), "kd_method": tuple(KD_METHODS),
            "final_kd_method": ("",) + tuple(KD_METHODS), "grpo_kl": tuple(GRPO_KL_FORMS)}
