"""Settings of one MoG trial: every number of the paper's §4.1 and appendix A.

A trial is one point of a sweep's grid with *all its seeds and all its iteration counts* batched
together: the alignment run of the longest iteration count is snapshotted at the shorter ones,
since a run of N iterations is exactly the first N steps of a longer run (constant learning rate,
draws keyed by step).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

ALGORITHMS = ("ppo", "grpo", "dpo_online", "dpo_offline")
TARGETS = ("single", "double")
KD_METHODS = ("seqkd", "pad_vpd", "pad_ppd")


@dataclass(frozen=True)
class MoGTrialConfig:
    algorithm: str = "ppo"
    """Aligner: 'ppo' (learned critic, clipped surrogate), 'grpo' (batch-mean baseline),
    'dpo_online' (fresh pairs from the policy each step), 'dpo_offline' (static pairs from π_ref)."""
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
    """How every KD stage distils: 'seqkd' (max-likelihood on teacher samples), 'pad_vpd', 'pad_ppd'."""
    final_kd_method: str = ""
    """The A-K final KD's method when it differs from kd_method ('' follows kd_method)."""
    sft_iterations: int = 2000
    """Adam steps fitting p' to samples of p*."""
    kd_iterations: int = 2000
    """Adam steps of each KD stage (p'' and the final KD of A-K)."""
    lr: float = 1e-2
    """Adam learning rate of every stage (appendix A.2)."""
    batch_size: int = 256
    """Samples per step for every stage; DPO draws batch_size pairs."""
    ppo_clip: float = 0.2
    """PPO clipping ε."""
    ppo_epochs: int = 1
    """PPO passes over each sampled batch."""
    ppo_minibatches: int = 4
    """Minibatches per PPO pass; >1 makes the ratio (and so the clip) matter after the first."""
    grpo_std_normalize: bool = False
    """Divide the GRPO advantage by the batch reward std."""
    dpo_offline_pairs: int = 2560
    """Size of the static preference set drawn once from π_ref (off-policy DPO)."""
    reward_scale: float = 10.0
    """R(x) = reward_scale · exp(−reward_alpha ‖x − c_t‖²) (eq. 4)."""
    reward_alpha: float = 2.0
    """Sharpness α of the oracle reward (eq. 4)."""
    eval_samples: int = 4096
    """Monte-Carlo samples per metric estimate (eq. 5–6)."""
    eval_every: int = 0
    """Learning-curve interval in alignment steps (0: no curve rows)."""
    pad_n: int = 4
    """PAD: responses per group the student samples (PAD paper §4.1)."""
    pad_beta: float = 10.0
    """PAD: Plackett–Luce inverse temperature β."""
    pad_temperature: float = 0.8
    """PAD: sampling temperature of the student's responses."""

    def __post_init__(self) -> None:
        # Tuples, so the frozen config hashes; lists arrive from YAML.
        object.__setattr__(self, "iterations", tuple(sorted({int(i) for i in _as_seq(self.iterations)})))
        object.__setattr__(self, "seeds", tuple(int(s) for s in _as_seq(self.seeds)))
        problems = []
        if self.algorithm not in ALGORITHMS:
            problems.append(f"algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if self.target not in TARGETS:
            problems.append(f"target {self.target!r} is not one of {', '.join(TARGETS)}")
        if self.kd_method not in KD_METHODS:
            problems.append(f"kd_method {self.kd_method!r} is not one of {', '.join(KD_METHODS)}")
        if self.final_kd_method not in ("",) + KD_METHODS:
            problems.append(f"final_kd_method {self.final_kd_method!r} is not one of '', {', '.join(KD_METHODS)}")
        if not self.beta > 0:
            problems.append(f"beta must be > 0, got {self.beta}")
        if not self.kd_beta >= 1:
            problems.append(f"kd_beta must be >= 1, got {self.kd_beta}")
        if not self.iterations or min(self.iterations) < 1:
            problems.append(f"iterations must be positive integers, got {list(self.iterations)}")
        if not self.seeds:
            problems.append("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds, default=0) < 0:
            problems.append(f"seeds must be distinct non-negative integers, got {list(self.seeds)}")
        if not 1 <= self.n_final_modes <= self.n_sft_modes:
            problems.append(f"n_final_modes must be in 1..n_sft_modes={self.n_sft_modes}, got {self.n_final_modes}")
        for name in ("sft_iterations", "kd_iterations", "batch_size", "eval_samples", "ppo_epochs",
                     "ppo_minibatches", "dpo_offline_pairs", "pad_n", "n_sft_modes"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.ppo_minibatches:
            problems.append(f"batch_size {self.batch_size} is not divisible by ppo_minibatches {self.ppo_minibatches}")
        if self.eval_every < 0:
            problems.append(f"eval_every must be >= 0, got {self.eval_every}")
        for name in ("lr", "ppo_clip", "reward_scale", "reward_alpha", "pad_beta", "pad_temperature"):
            if not float(getattr(self, name)) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict) -> "MoGTrialConfig":
        """Build from a plain dict, rejecting unknown keys with the list of valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
        return cls(**d)

    @property
    def final_kd(self) -> str:
        """The method of the A-K final KD."""
        return self.final_kd_method or self.kd_method

    def replace(self, **kw) -> "MoGTrialConfig":
        return dataclasses.replace(self, **kw)


def _as_seq(v):
    return v if isinstance(v, (list, tuple)) else (v,)


def config_fields() -> dict[str, dataclasses.Field]:
    """The fields of MoGTrialConfig by name (the sweep validator lists them in its errors)."""
    return {f.name: f for f in dataclasses.fields(MoGTrialConfig)}
