"""K-A and A-K in the LLM world (paper §4.2, Figure 5), one trial = one LLMTrialConfig:

    K-A:  p* ─sft→ p' ─kd→ p'' ─align(ref=p'')→ p''_KA
    A-K:  p* ─sft→ p' ─align(ref=p')→ p'_AK ─kd(τ)→ p''_AK

Per seed (one after the other): the shared cast (p', p'', p_target, the reward) from the chain's cache;
p'' re-distilled by PAD when kd_method asks; both aligners in one backend call, each run to the largest
iteration count and checkpointed; for every iteration count N, the selection rule (appendix C.4) picks
a checkpoint at or before N; A-K distils its pick at τ = final_kd_temperature into a p''-sized student.

Rows: p_prime (both pipelines), p_dprime (K-A), aligned (A-K: p'_AK), final (K-A: p''_KA, A-K:
p''_AK), each with the four metrics and `selected_step`; and selection_curve rows (step, reward mean
as final_average_reward, reward_std, margin, accuracy, kl, loss) that the rules read and the dashboard
draws as Figures 13–14. Text samples (`TrialResult.samples`): the first TEXT_SAMPLES sequences of
every token set and of every evaluated model's evaluation set, decoded, with NLL under p_target and R.

A lock per (preset, seed) in the work directory makes concurrent trials of one storage (another sweep,
another Tune trial) wait for each other instead of writing the same models twice. A lock is a local
file: with the work directory on object storage it lives in this machine's local dir, and the service
runs one LLM trial at a time (`service.worlds.LLM.max_concurrent`).
"""
from __future__ import annotations

import os
from typing import Callable

from filelock import FileLock

from adk_ray import storage
from adk_ray.pipeline.llm_chain import Artefact, Backend, Chain
from adk_ray.pipeline.result import TrialResult
from adk_ray.worlds.llm.config import LLMTrialConfig
from adk_ray.worlds.llm.metrics import METRICS

Progress = Callable[[str], None] | None
CURVE_COLUMNS = ("reward_std", "margin", "accuracy", "kl", "loss")


def run_llm_trial(cfg: LLMTrialConfig, workdir: str, backend: Backend | None = None,
                  progress: Progress = None) -> TrialResult:
    """Both pipelines for every seed and iteration count of one config."""
    preset = cfg.resolved_preset()
    locks = os.path.join(storage.local_dir() if storage.is_uri(workdir) else workdir, "locks")
    os.makedirs(locks, exist_ok=True)
    result = TrialResult()
    for seed in cfg.seeds:
        with FileLock(os.path.join(locks, f"{preset.name}-seed{seed}.lock")):
            chain = Chain(preset, seed, workdir, backend, progress=progress)
            rows, samples = _one_seed(cfg, chain)
            result.rows.extend(rows)
            result.samples.extend(samples)
    return result


def _one_seed(cfg: LLMTrialConfig, chain: Chain) -> tuple[list[dict], list[dict]]:
    from adk_ray.worlds.llm.align import checkpoint_dir, read_align, read_curve
    from adk_ray.worlds.llm.aligners import select_checkpoint

    p = chain.preset
    c = chain.cast()
    truth, held_out, p_prime, p_target, reward = (c["truth"], c["truth_heldout"], c["p_prime"], c["p_target"],
                                                  c["reward"])
    p_dprime = chain.distil("p_dprime", c["p_dprime"], p_prime, cfg.kd_method)

    rows: list[dict] = []
    samples: list[dict] = []

    def texts(data: Artefact, **tags) -> None:
        samples.extend(chain.text_samples(data, p_target, reward, algorithm=cfg.algorithm, **tags))

    def evaluate(name: str, model: Artefact, label: str = "", pipeline: str = "", stage: str = "",
                 iterations: int | None = None) -> dict:
        metrics = chain.evaluate(name, model, truth, p_target, held_out, reward)
        # the evaluated model's own τ=1 samples, the ones its four metrics read
        texts(chain.eval_set(name, model), model=label, pipeline=pipeline, stage=stage, iterations=iterations)
        return metrics

    def row(pipeline: str, stage: str, metrics: dict, iterations: int | None = None, **extra) -> None:
        rows.append({"world": "llm", "algorithm": cfg.algorithm, "pipeline": pipeline, "stage": stage,
                     "seed": chain.seed, "iterations": iterations, "step": None, **metrics, **extra})

    # p*'s τ=1 held-out samples (what recall reads) and every token set the cast was trained on
    texts(held_out, model="p*", pipeline="", stage="truth")
    for name in ("truth_train", "p_prime_kd", "p_prime_target"):
        texts(c[name], model="", pipeline="", stage="")
    texts(chain.dataset(p_target, "p_target_self", p.sampling.threshold_samples, p.eval_temperature),
          model="", pipeline="", stage="")
    pp = evaluate("p_prime", p_prime, "p'", "both", "p_prime")
    row("K-A", "p_prime", pp)
    row("A-K", "p_prime", pp)
    row("K-A", "p_dprime", evaluate(f"p_dprime_{cfg.kd_method}", p_dprime, "p''", "K-A", "p_dprime"))

    longest = max(cfg.iterations)
    (ka_run, _), (ak_run, _) = chain.align([("p_dprime_KA", p_dprime), ("p_prime_AK", p_prime)], cfg.algorithm,
                                           cfg.beta, longest, p_target, reward)
    for pipeline, run in (("K-A", ka_run), ("A-K", ak_run)):
        for point in read_curve(run.path):
            row(pipeline, "selection_curve", {"final_average_reward": point.get("reward_mean")}, longest,
                **{"step": point["step"], **{k: point.get(k) for k in CURVE_COLUMNS}})

    for n in cfg.iterations:
        picked = {}
        for pipeline, run in (("K-A", ka_run), ("A-K", ak_run)):
            curve = [q for q in read_curve(run.path) if q["step"] <= n]
            steps = [s for s in read_align(run.path)["checkpoints"] if s <= n]
            if not steps:
                raise ValueError(f"no checkpoint at or before iteration {n} (checkpoint_every="
                                 f"{p.align.checkpoint_every}); make each iteration count a multiple of it")
            step, _ = select_checkpoint(cfg.algorithm, curve, steps, p.align)
            picked[pipeline] = (step, Artefact(f"{run.key}-ckpt{step}", checkpoint_dir(run.path, step)))
        ka_step, ka_model = picked["K-A"]
        ak_step, ak_model = picked["A-K"]
        row("K-A", "final", evaluate("p_dprime_KA", ka_model, "p''_KA", "K-A", "final", n), n, selected_step=ka_step)
        row("A-K", "aligned", evaluate("p_prime_AK", ak_model, "p'_AK", "A-K", "aligned", n), n,
            selected_step=ak_step)
        kd_data = chain.dataset(ak_model, "p_prime_AK_kd", p.sampling.train_samples, cfg.final_kd_temperature)
        texts(kd_data, model="", pipeline="A-K", stage="", iterations=n)
        seqkd, = chain.students([("p_dprime_AK", p.p_dprime, kd_data)])
        final = chain.distil("p_dprime_AK", seqkd, ak_model, cfg.final_kd)
        row("A-K", "final", evaluate(f"p_dprime_AK_{cfg.final_kd}", final, "p''_AK", "A-K", "final", n), n,
            selected_step=ak_step)
    for r in rows:
        for m in METRICS:
            r.setdefault(m, None)
    return rows, samples
