"""A synthetic results store following docs/results.md, for tests, the benchmark and demos.

The numbers are invented (A-K ahead on reward and target precision, K-A noisier) but the layout
is the real one: data/ with one Parquet file per trial, models/ with MoG parameters, sweep.json.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adk_ray.columns import PIPELINES

from .mog import STD

ROW_SCHEMA = pa.schema([
    ("sweep", pa.string()), ("trial_id", pa.string()), ("world", pa.string()), ("algorithm", pa.string()),
    ("pipeline", pa.string()), ("stage", pa.string()), ("beta", pa.float64()), ("iterations", pa.int64()),
    ("kd_beta", pa.float64()), ("n_final_modes", pa.int64()), ("target", pa.string()),
    ("kd_method", pa.string()), ("seed", pa.int64()), ("step", pa.int64()),
    ("final_average_reward", pa.float64()), ("target_precision", pa.float64()),
    ("overall_precision", pa.float64()), ("overall_recall", pa.float64()), ("status", pa.string()),
    ("error", pa.string()), ("wall_seconds", pa.float64()), ("config_json", pa.string()),
    ("code_version", pa.string()),
])
MODEL_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("world", pa.string()), ("pipeline", pa.string()), ("stage", pa.string()),
    ("seed", pa.int64()), ("iterations", pa.int64()), ("beta", pa.float64()), ("kd_beta", pa.float64()),
    ("n_final_modes", pa.int64()), ("target", pa.string()), ("kd_method", pa.string()),
    ("weights", pa.list_(pa.float64())), ("means", pa.list_(pa.float64())), ("scales", pa.list_(pa.float64())),
])
BETAS = (0.05, 0.1, 0.3, 0.5, 1.0, 2.0)
ITERATIONS = (100, 300, 500, 1000, 2000, 3000)
# p′ keeps 6 of the 8 modes, target (1.5, −1.5) among them; p″ drops the target.
P_PRIME_MODES = [(1.5, -1.5), (-1.5, -1.5), (-1.5, 0.0), (-1.5, 1.5), (0.0, 1.5), (1.5, 1.5)]
P_DPRIME_MODES = [(-1.5, -1.5), (-1.5, 1.5), (0.0, 1.5), (1.5, 1.5)]


def _metrics(rng, pipeline: str, stage: str, beta: float, it: int, n: int = 1) -> dict:
    """Invented but paper-shaped: A-K reaches the target, K-A mostly cannot and varies more."""
    progress = min(it, 1000) / 1000 / (1 + beta)
    if stage in ("p_prime",):
        base = (0.5, -6.0, -1.2, -2.9)
    elif stage == "p_dprime":
        base = (0.05, -12.0, -1.0, -5.5)
    elif pipeline == "A-K":
        base = (1 + 7 * progress, -6 + 5 * progress, -1.2, -3.2 - progress)
    else:
        base = (0.05 + 2.5 * progress, -12 + 5 * progress, -1.0, -5.5 - progress)
    spread = (0.4, 0.5, 0.1, 0.2) if pipeline == "A-K" else (1.2, 1.5, 0.15, 0.4)
    v = [b + s * rng.standard_normal(n) for b, s in zip(base, spread)]
    return {"final_average_reward": np.clip(v[0], 0, 10), "target_precision": v[1],
            "overall_precision": v[2], "overall_recall": v[3]}


def _mixture(modes, rng) -> dict:
    k = len(modes)
    w = rng.dirichlet(np.full(k, 20.0))
    means = (np.array(modes) + 0.05 * rng.standard_normal((k, 2))).ravel()
    scales = (STD * np.exp(0.1 * rng.standard_normal((k, 2)))).ravel()
    return {"weights": w.tolist(), "means": means.tolist(), "scales": scales.tolist()}


def write_synthetic_results(root: str, *, seeds: int = 5, curve_steps: int = 5, world: str = "mog",
                            failed: bool = True, pending: int = 1, with_models: bool = True,
                            with_sweep_json: bool = True, sweep: str = "synthetic_ppo") -> str:
    """Write a synthetic store under root (β sweep at 300 iterations + iteration sweep at β=1.0).

    Rows: per trial and seed, p′ (both pipelines), p″ (K-A), p′_AK (A-K), two finals and
    `curve_steps` curve rows per pipeline; the LLM world adds selection_curve rows. With
    `failed`, the iterations=3000 trial is an error. Returns root."""
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    if with_models:
        os.makedirs(os.path.join(root, "models"), exist_ok=True)
    rng = np.random.default_rng(1234)
    trials = sorted({(b, 300) for b in BETAS} | {(1.0, i) for i in ITERATIONS})
    for beta, it in trials:
        cfg = {"algorithm": "ppo", "beta": beta, "iterations": [it], "kd_beta": 1.25, "n_final_modes": 4,
               "target": "single", "kd_method": "seqkd"}
        tid = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
        common = {"sweep": sweep, "trial_id": tid, "world": world, "algorithm": "ppo", "beta": beta,
                  "iterations": it, "kd_beta": 1.25, "n_final_modes": 4, "target": "single",
                  "kd_method": "seqkd", "wall_seconds": 12.5, "config_json": json.dumps(cfg),
                  "code_version": "synthetic"}
        rows = []
        if failed and it == ITERATIONS[-1]:
            for p in PIPELINES:
                rows.append({**common, "pipeline": p, "stage": "final", "seed": 0, "status": "error",
                             "error": "Traceback (most recent call last):\n  ...\nFloatingPointError: "
                                      "NaN in PPO loss at step 2717 <b>not html</b>"})
        else:
            for s in range(seeds):
                stages = [("K-A", "p_prime"), ("A-K", "p_prime"), ("K-A", "p_dprime"), ("A-K", "aligned"),
                          ("K-A", "final"), ("A-K", "final")]
                for p, st in stages:
                    m = _metrics(rng, p, st, beta, it)
                    rows.append({**common, "pipeline": p, "stage": st, "seed": s, "status": "ok",
                                 **{k: float(v[0]) for k, v in m.items()}})
                for p in PIPELINES:
                    for j in range(curve_steps):
                        step = int(round(it * (j + 1) / curve_steps))
                        m = _metrics(rng, p, "final", beta, step)
                        rows.append({**common, "pipeline": p, "stage": "curve", "seed": s, "step": step,
                                     "status": "ok", **{k: float(v[0]) for k, v in m.items()}})
                        if world == "llm":
                            rows.append({**common, "pipeline": p, "stage": "selection_curve", "seed": s,
                                         "step": step, "status": "ok",
                                         "final_average_reward": float(m["final_average_reward"][0])})
        table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
        if world == "llm":
            # A selection-only column (as a PPO rule reads the reward std): drawn as its own curve.
            std = [float(abs(rng.normal(2, 0.5))) if r["stage"] == "selection_curve" else None for r in rows]
            table = table.append_column("reward_std", pa.array(std, pa.float64()))
        pq.write_table(table, os.path.join(root, "data", f"{tid}.parquet"))
        if with_models and not (failed and it == ITERATIONS[-1]):
            mrows = []
            for s in range(seeds):
                mrng = np.random.default_rng(s)
                base = {"trial_id": tid, "world": world, "seed": s, "iterations": it, "beta": beta,
                        "kd_beta": 1.25, "n_final_modes": 4, "target": "single", "kd_method": "seqkd"}
                mrows.append({**base, "pipeline": "K-A", "stage": "p_prime", **_mixture(P_PRIME_MODES, mrng)})
                mrows.append({**base, "pipeline": "K-A", "stage": "p_dprime", **_mixture(P_DPRIME_MODES, mrng)})
            pq.write_table(pa.Table.from_pylist(mrows, schema=MODEL_SCHEMA),
                           os.path.join(root, "models", f"{tid}.parquet"))
    if with_sweep_json:
        spec = {"name": sweep, "hypothesis": "A-K beats K-A on reward and target precision (synthetic data).",
                "world": world, "fixed": {"algorithm": "ppo", "kd_beta": 1.25, "n_final_modes": 4},
                "grid": [{"beta": list(BETAS), "iterations": [300]}, {"beta": [1.0], "iterations": list(ITERATIONS)}],
                "seeds": list(range(seeds)), "group_by": ["beta", "iterations"], "smoke": False,
                "trials": len(trials) + pending}
        with open(os.path.join(root, "sweep.json"), "w") as f:
            json.dump(spec, f, indent=1)
    return root
