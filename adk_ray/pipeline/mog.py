"""K-A and A-K in the MoG world: the same stages in two orders, batched over seeds and grid points.

    K-A:  p* ─sft→ p' ─kd→ p'' ─align(ref=p'')→ p''_KA
    A-K:  p* ─sft→ p' ─align(ref=p')→ p'_AK ─kd→ p''_AK

p' (per seed) and p'' (per seed and β_KD) come from the stage cache, so every trial of a sweep
shares them. All seeds, β values and iteration counts of the configs given to `run_batch` are
trained in batched calls; iteration counts of a run are snapshots of its longest one.

`run_batch` reads as its phases: plan the batch, fit the references, record them, align both
pipelines, distil and record the finals. Every phase works on one `Batch` (its units are the
(config, seed) pairs) and writes rows through one `Recorder`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from adk_ray.columns import MOG_EVAL_COLUMNS, PIPELINES
from adk_ray.pipeline.cache import StageCache
from adk_ray.pipeline.result import TrialResult
from adk_ray.worlds.mog import exact, model, stages, truth
from adk_ray.worlds.mog.aligners import AlignSettings, align
from adk_ray.worlds.mog.config import MoGTrialConfig
from adk_ray.worlds.mog.geometry import TRAP_FRACTION, Geometry
from adk_ray.worlds.mog.kd_methods import KD_METHODS
from adk_ray.worlds.mog.slices import slice_of

# Fields that may differ between configs batched together; everything else must agree.
BATCHABLE = ("beta", "iterations", "seeds", "kd_beta")
Progress = Callable[[str, int, int], None] | None
"""progress(stage, steps_done, steps_total): called as optimiser steps complete."""


def run_trial(cfg: MoGTrialConfig, cache_dir: str | None = None, progress: Progress = None) -> TrialResult:
    """Both pipelines for every seed and iteration count of one config (one Tune trial)."""
    return run_batch([cfg], StageCache(cache_dir), progress)


def run_batch(cfgs: list[MoGTrialConfig], cache: StageCache | None = None, progress: Progress = None) -> TrialResult:
    """Both pipelines for several configs that differ only in BATCHABLE fields, in one batched run."""
    batch = Batch.of(cfgs)
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give; Ray runs trials in parallel
    tracker = _Tracker(progress, batch.total_steps())
    refs = fit_references(batch, cache or StageCache(), tracker)
    out = Recorder(batch.base)
    out.references(batch, refs)
    aligned = align_both(batch, refs, out, tracker)
    distil_finals(batch, aligned, out, tracker)
    return out.result


# ----------------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class Unit:
    """One (config, seed) of a batch: it gets one alignment run per pipeline."""

    cfg: MoGTrialConfig
    seed: int


@dataclass(frozen=True)
class Batch:
    """The units of one `run_batch` call, configs in order, each config's seeds in order."""

    base: MoGTrialConfig
    """The first config: every non-BATCHABLE field is the same in all of them."""
    units: tuple[Unit, ...]

    @classmethod
    def of(cls, cfgs: list[MoGTrialConfig]) -> "Batch":
        base = cfgs[0]
        for c in cfgs[1:]:
            diff = [f.name for f in dataclasses.fields(c)
                    if f.name not in BATCHABLE and getattr(c, f.name) != getattr(base, f.name)]
            if diff:
                raise ValueError(f"configs batched together must agree on {', '.join(diff)}")
        return cls(base, tuple(Unit(c, s) for c in cfgs for s in c.seeds))

    @property
    def seeds(self) -> list[int]:
        """Distinct seeds: one p' each."""
        return sorted({u.seed for u in self.units})

    @property
    def kd_pairs(self) -> list[tuple[int, float]]:
        """Distinct (seed, β_KD): one p'' each."""
        return sorted({(u.seed, u.cfg.kd_beta) for u in self.units})

    @property
    def finals(self) -> list[tuple[int, int]]:
        """(unit index, iteration count) of every final model."""
        return [(i, it) for i, u in enumerate(self.units) for it in u.cfg.iterations]

    def total_steps(self) -> int:
        b = self.base
        return (b.sft_iterations * len(self.seeds) + b.kd_iterations * len(self.kd_pairs)
                + 2 * sum(max(u.cfg.iterations) for u in self.units) + b.kd_iterations * len(self.finals))


@dataclass(frozen=True)
class References:
    """Each unit's two references: p' (A-K aligns it) and p'' (K-A aligns it), [U, ...] in unit order."""

    p_prime: model.Params
    p_dprime: model.Params


Owner = tuple[MoGTrialConfig, int, "int | None"]
"""(config, seed, iteration count or None) that a model row belongs to."""


class Recorder:
    """Evaluates models and turns them into result rows (and stored parameters)."""

    def __init__(self, base: MoGTrialConfig):
        self.base, self.geometry, self.result = base, Geometry.of(base), TrialResult()
        self.trap: dict[tuple[int, float], bool] = {}
        """(seed, β_KD) → whether that p'' lost the target mode; set by `references`, read by every row."""

    def rows(self, pipeline: str, stage: str, q: model.Params, owners: list[Owner], step: int | None = None,
             store_model: bool = True) -> None:
        """Metric rows (and stored parameters) for models q[t] owned by owners[t]."""
        metrics = {k: v.tolist() for k, v in
                   stages.evaluate(q, [s for _, s, _ in owners], self.geometry, self.base.eval_samples).items()}
        columns = stages.METRICS + MOG_EVAL_COLUMNS
        w, mu, sc = model.weights(q), q["means"], q["log_scales"].exp()
        for t, (c, s, it) in enumerate(owners):
            key = dict(world="mog", algorithm=c.algorithm, pipeline=pipeline, stage=stage, beta=c.beta,
                       iterations=it, kd_beta=c.kd_beta, n_final_modes=c.n_final_modes, target=c.target,
                       kd_method=c.kd_method, final_kd_method=c.final_kd_method, seed=s)
            self.result.rows.append({**key, "step": step, **{m: metrics[m][t] for m in columns},
                                     "trap": self.trap.get((s, c.kd_beta))})
            if store_model:
                self.result.models.append({**key, "weights": w[t].tolist(), "means": mu[t].flatten().tolist(),
                                           "scales": sc[t].flatten().tolist()})

    def references(self, batch: Batch, refs: References) -> None:
        """The starting points, once per unit and pipeline; first each unit's premise: p'' is in the trap
        when its exact target mass is below TRAP_FRACTION of p*'s (docs/mog.md, "The premise")."""
        owners = [(u.cfg, u.seed, None) for u in batch.units]
        p_star_mass = exact.target_mass(truth.ground_truth(self.geometry), self.geometry).item()
        mass = exact.target_mass(refs.p_dprime, self.geometry).tolist()
        for u, m in zip(batch.units, mass):
            self.trap[u.seed, u.cfg.kd_beta] = bool(m < TRAP_FRACTION * p_star_mass)
        for pipeline in PIPELINES:
            self.rows(pipeline, "p_prime", refs.p_prime, owners)
        self.rows("K-A", "p_dprime", refs.p_dprime, owners)


# ------------------------------------------------------------------------------------------ phases

def fit_references(batch: Batch, cache: StageCache, tracker: "_Tracker") -> References:
    """p' per seed and p'' per (seed, β_KD), from the cache or fitted in one batched call each."""
    base, seeds, kd_pairs = batch.base, batch.seeds, batch.kd_pairs
    sft = stages.sft_settings(base)
    # p' is fitted to p*, so the key names p*'s geometry (and the KD stages' keys chain on p''s)
    pp_entries, pp_keys = cache.get_many(
        "sft", {**dataclasses.asdict(sft), "grid_spacing": base.grid_spacing}, seeds, [()] * len(seeds),
        lambda miss: _split(stages.sft([seeds[i] for i in miss], sft, Geometry.of(base),
                                       progress=tracker.step("sft", len(miss)))))
    p_prime = model.cat(pp_entries)                                          # [S, ...] by seeds order
    by_seed = {s: i for i, s in enumerate(seeds)}

    kd = KD_METHODS[base.kd_method]
    kd_settings = slice_of(kd.settings, base)

    def make_p_dprime(miss):
        teacher = model.index(p_prime, [by_seed[kd_pairs[i][0]] for i in miss])
        kd_beta = torch.tensor([kd_pairs[i][1] for i in miss])
        return _split(kd.distill(teacher, kd_beta, [kd_pairs[i][0] for i in miss], kd_settings,
                                 progress=tracker.step("kd", len(miss))))

    pd_entries, _ = cache.get_many("kd", {"kd_method": base.kd_method, **dataclasses.asdict(kd_settings)},
                                   [s for s, _ in kd_pairs],
                                   [(pp_keys[by_seed[s]], f"kd_beta={b}") for s, b in kd_pairs], make_p_dprime)
    by_kd = {pair: i for i, pair in enumerate(kd_pairs)}
    return References(p_prime=model.index(p_prime, [by_seed[u.seed] for u in batch.units]),
                      p_dprime=model.index(model.cat(pd_entries), [by_kd[u.seed, u.cfg.kd_beta] for u in batch.units]))


def align_both(batch: Batch, refs: References, out: Recorder, tracker: "_Tracker") -> dict:
    """Both pipelines' alignment in batched calls; returns {(pipeline, unit, iterations): policy}.

    Runs 0..U-1 are K-A, U..2U-1 are A-K: p'' is padded with zero-weight components to p''s count,
    which changes none of its numbers. Runs are grouped by length, so a run that needs 300 steps
    never rides along a 3000-step one.
    """
    base, units = batch.base, batch.units
    runs = [(p, i, u) for p in PIPELINES for i, u in enumerate(units)]
    start = model.cat([model.pad_components(refs.p_dprime, base.n_sft_modes), refs.p_prime])
    beta = torch.tensor([u.cfg.beta for u in units])
    run_beta = torch.cat([beta, beta])
    settings = AlignSettings.of(base)
    aligned: dict[tuple[str, int, int], model.Params] = {}
    for length in sorted({max(u.cfg.iterations) for u in units}):
        group = [r for r, (_, _, u) in enumerate(runs) if max(u.cfg.iterations) == length]
        members = [runs[r] for r in group]

        def curve(q, step, members=members, length=length):
            for pipeline in PIPELINES:
                pos = [j for j, (p, _, _) in enumerate(members) if p == pipeline]
                out.rows(pipeline, "curve", model.index(q, pos),
                         [(members[j][2].cfg, members[j][2].seed, length) for j in pos], step, store_model=False)

        snaps = align(model.index(start, group), [u.seed for _, _, u in members], run_beta[group],
                      {it for _, _, u in members for it in u.cfg.iterations}, settings,
                      on_eval=curve, progress=tracker.step("align", len(group)))
        for j, (pipeline, i, u) in enumerate(members):
            for it in u.cfg.iterations:
                aligned[pipeline, i, it] = model.index(snaps[it], [j])
    return aligned


def distil_finals(batch: Batch, aligned: dict, out: Recorder, tracker: "_Tracker") -> None:
    """K-A: the aligned p'' is the final model. A-K: distil each aligned p' with the KD settings that made p''."""
    base, finals = batch.base, batch.finals
    owners = [(batch.units[i].cfg, batch.units[i].seed, it) for i, it in finals]
    ka_final = model.first_components(model.cat([aligned["K-A", i, it] for i, it in finals]), base.n_final_modes)
    ak_aligned = model.cat([aligned["A-K", i, it] for i, it in finals])
    kd = KD_METHODS[base.final_kd]
    ak_final = kd.distill(ak_aligned, torch.tensor([batch.units[i].cfg.kd_beta for i, _ in finals]),
                          [batch.units[i].seed for i, _ in finals], slice_of(kd.settings, base),
                          progress=tracker.step("final kd", len(finals)))
    out.rows("K-A", "final", ka_final, owners)
    out.rows("A-K", "aligned", ak_aligned, owners)
    out.rows("A-K", "final", ak_final, owners)


def _split(params: model.Params) -> list[dict]:
    return [model.index(params, [t]) for t in range(next(iter(params.values())).shape[0])]


class _Tracker:
    """Turns per-step callbacks of batched stages into progress(stage, done, total) in trial-steps."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def step(self, stage: str, width: int):
        if not self.progress:
            return None

        def on_step(n: int) -> None:
            self.done += n * width
            self.progress(stage, self.done, self.total)
        return on_step
