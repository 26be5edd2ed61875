"""K-A and A-K in the MoG world: the same stages in two orders, batched over seeds and grid points.

    K-A:  p* ─sft→ p' ─kd→ p'' ─align(ref=p'')→ p''_KA
    A-K:  p* ─sft→ p' ─align(ref=p')→ p'_AK ─kd→ p''_AK

p' (per seed) and p'' (per seed and β_KD) come from the stage cache, so every trial of a sweep
shares them. All seeds, β values and iteration counts of the configs given to `run_batch` are
trained in batched calls; iteration counts of a run are snapshots of its longest one.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from adk_ray.columns import PIPELINES
from adk_ray.pipeline.cache import StageCache
from adk_ray.pipeline.result import TrialResult
from adk_ray.worlds.mog import model, stages
from adk_ray.worlds.mog.config import MoGTrialConfig
from adk_ray.worlds.mog.pad_kd import distill_pad

# Fields that may differ between configs batched together; everything else must agree.
BATCHABLE = ("beta", "iterations", "seeds", "kd_beta")
Progress = Callable[[str, int, int], None] | None
"""progress(stage, steps_done, steps_total): called as optimiser steps complete."""


def run_trial(cfg: MoGTrialConfig, cache_dir: str | None = None, progress: Progress = None) -> TrialResult:
    """Both pipelines for every seed and iteration count of one config (one Tune trial)."""
    return run_batch([cfg], StageCache(cache_dir), progress)


def run_batch(cfgs: list[MoGTrialConfig], cache: StageCache | None = None, progress: Progress = None) -> TrialResult:
    """Both pipelines for several configs that differ only in BATCHABLE fields, in one batched run."""
    cache = cache or StageCache()
    base = cfgs[0]
    for c in cfgs[1:]:
        diff = [f.name for f in dataclasses.fields(c)
                if f.name not in BATCHABLE and getattr(c, f.name) != getattr(base, f.name)]
        if diff:
            raise ValueError(f"configs batched together must agree on {', '.join(diff)}")
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give; Ray runs trials in parallel

    units = [(i, s) for i, c in enumerate(cfgs) for s in c.seeds]          # one alignment run each
    unit_seeds = [s for _, s in units]
    unit_cfg = [cfgs[i] for i, _ in units]
    seeds = sorted(set(unit_seeds))
    kd_pairs = sorted({(s, c.kd_beta) for c in cfgs for s in c.seeds})
    tracker = _Tracker(progress, total=(base.sft_iterations * len(seeds) + base.kd_iterations * len(kd_pairs)
                                        + 2 * sum(max(c.iterations) * len(c.seeds) for c in cfgs)
                                        + base.kd_iterations * sum(len(c.iterations) * len(c.seeds) for c in cfgs)))
    fit = dict(lr=base.lr, batch_size=base.batch_size)

    # p' per seed, cached.
    sft_settings = dict(n_components=base.n_sft_modes, iterations=base.sft_iterations, **fit)
    pp_entries, pp_keys = cache.get_many(
        "sft", sft_settings, seeds, [()] * len(seeds),
        lambda miss: _split(stages.sft([seeds[i] for i in miss], base.n_sft_modes, base.sft_iterations,
                                       progress=tracker.step("sft", len(miss)), **fit)))
    p_prime = model.cat(pp_entries)                                          # [S, ...] by seeds order
    by_seed = {s: i for i, s in enumerate(seeds)}

    # p'' per (seed, β_KD), cached; its input is that seed's p'.
    kd_settings = dict(n_components=base.n_final_modes, iterations=base.kd_iterations, kd_method=base.kd_method, **fit)
    if base.kd_method != "seqkd":
        kd_settings.update(pad_n=base.pad_n, pad_beta=base.pad_beta, pad_temperature=base.pad_temperature)

    def make_p_dprime(miss):
        teacher = model.index(p_prime, [by_seed[kd_pairs[i][0]] for i in miss])
        kd_beta = torch.tensor([kd_pairs[i][1] for i in miss])
        return _split(_distill(base.kd_method, base, teacher, kd_beta, [kd_pairs[i][0] for i in miss],
                               tracker.step("kd", len(miss))))

    pd_entries, _ = cache.get_many("kd", kd_settings, [s for s, _ in kd_pairs],
                                   [(pp_keys[by_seed[s]], f"kd_beta={b}") for s, b in kd_pairs], make_p_dprime)
    p_dprime = model.cat(pd_entries)
    by_kd = {pair: i for i, pair in enumerate(kd_pairs)}

    result = TrialResult()
    beta = torch.tensor([c.beta for c in unit_cfg])
    ref_ka = model.index(p_dprime, [by_kd[(s, c.kd_beta)] for s, c in zip(unit_seeds, unit_cfg)])
    ref_ak = model.index(p_prime, [by_seed[s] for s in unit_seeds])

    def evaluate(q: model.Params, seeds_of_q: list[int]) -> dict[str, list[float]]:
        m = stages.evaluate(q, seeds_of_q, base.target, base.eval_samples, base.reward_scale, base.reward_alpha)
        return {k: v.tolist() for k, v in m.items()}

    def rows(pipeline: str, stage: str, q: model.Params, owners: list[tuple[MoGTrialConfig, int, int | None]],
             step: int | None = None, store_model: bool = True) -> None:
        """Metric rows (and stored parameters) for models q[t] owned by (config, seed, iterations)."""
        metrics = evaluate(q, [s for _, s, _ in owners])
        w, mu, sc = model.weights(q), q["means"], q["log_scales"].exp()
        for t, (c, s, it) in enumerate(owners):
            key = dict(world="mog", algorithm=c.algorithm, pipeline=pipeline, stage=stage, beta=c.beta,
                       iterations=it, kd_beta=c.kd_beta, n_final_modes=c.n_final_modes, target=c.target,
                       kd_method=c.kd_method, final_kd_method=c.final_kd_method, seed=s)
            result.rows.append({**key, "step": step, **{m: metrics[m][t] for m in stages.METRICS}})
            if store_model:
                result.models.append({**key, "weights": w[t].tolist(), "means": mu[t].flatten().tolist(),
                                      "scales": sc[t].flatten().tolist()})

    # Starting points, once per (config, seed) and pipeline.
    owners = [(c, s, None) for c, s in zip(unit_cfg, unit_seeds)]
    for pipeline in PIPELINES:
        rows(pipeline, "p_prime", ref_ak, owners)
    rows("K-A", "p_dprime", ref_ka, owners)

    # Both pipelines align in one batched call (runs 0..U-1 are K-A, U..2U-1 are A-K): p'' is padded
    # with zero-weight components to p''s count, which changes none of its numbers. Runs are grouped
    # by length, so a run that needs 300 steps never rides along a 3000-step one.
    U = len(units)
    start = model.cat([model.pad_components(ref_ka, base.n_sft_modes), ref_ak])
    run_cfg, run_seeds, run_beta = unit_cfg * 2, unit_seeds * 2, torch.cat([beta, beta])
    run_pipeline = ["K-A"] * U + ["A-K"] * U
    snaps: dict[tuple[int, int], model.Params] = {}
    for length in sorted({max(c.iterations) for c in unit_cfg}):
        group = [r for r, c in enumerate(run_cfg) if max(c.iterations) == length]

        def curve(q, step, group=group, length=length):
            for pipeline in PIPELINES:
                pos = [j for j, r in enumerate(group) if run_pipeline[r] == pipeline]
                rows(pipeline, "curve", model.index(q, pos),
                     [(run_cfg[group[j]], run_seeds[group[j]], length) for j in pos], step, store_model=False)
        out = stages.align(
            model.index(start, group), model.index(start, group), [run_seeds[r] for r in group], run_beta[group],
            base.algorithm, sorted({i for r in group for i in run_cfg[r].iterations}), base.target, base.lr,
            base.batch_size, base.reward_scale, base.reward_alpha, base.ppo_clip, base.ppo_epochs,
            base.ppo_minibatches, base.grpo_std_normalize, base.dpo_offline_pairs, base.eval_every, curve,
            tracker.step("align", len(group)))
        for j, r in enumerate(group):
            for it in run_cfg[r].iterations:
                snaps[r, it] = model.index(out[it], [j])

    # K-A: the aligned p'' is the final model. A-K: distil each aligned p' with the KD settings that made p''.
    finals = [(u, it) for u, c in enumerate(unit_cfg) for it in c.iterations]
    f_owners = [(unit_cfg[u], unit_seeds[u], it) for u, it in finals]
    ka_final = model.first_components(model.cat([snaps[u, it] for u, it in finals]), base.n_final_modes)
    ak_aligned = model.cat([snaps[U + u, it] for u, it in finals])
    ak_final = _distill(base.final_kd, base, ak_aligned, torch.tensor([unit_cfg[u].kd_beta for u, _ in finals]),
                        [unit_seeds[u] for u, _ in finals], tracker.step("final kd", len(finals)))
    rows("K-A", "final", ka_final, f_owners)
    rows("A-K", "aligned", ak_aligned, f_owners)
    rows("A-K", "final", ak_final, f_owners)
    return result


def _distill(method: str, cfg: MoGTrialConfig, teacher: model.Params, kd_beta: torch.Tensor, seeds: list[int],
             progress) -> model.Params:
    """One KD stage (p' → p'' or p'_AK → p''_AK) by the chosen method, with the config's KD settings."""
    if method == "seqkd":
        return stages.distill(teacher, kd_beta, seeds, cfg.n_final_modes, cfg.kd_iterations, cfg.lr,
                              cfg.batch_size, progress)
    elif method in ("pad_vpd", "pad_ppd"):
        return distill_pad(teacher, kd_beta, seeds, cfg.n_final_modes, cfg.kd_iterations, cfg.lr, cfg.batch_size,
                           method, cfg.pad_n, cfg.pad_beta, cfg.pad_temperature, progress)
    raise ValueError(f"unknown kd_method {method!r}; valid: seqkd, pad_vpd, pad_ppd")


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
