"""The LLM world through the sweep service: LLM sweep files plan and validate like the MoG ones, and
the --smoke form of llm_pad runs end to end on an embedded Ray (tiny preset on CPU: Ray tasks sample,
Ray Train TorchTrainers of DeepSpeed workers train, align and PAD-distil), writing rows for every
model of both pipelines. llm_ppo and llm_dpo run end to end on the real-weights gguf-smoke preset in
tests/test_llm_gguf.py."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from adk_ray.service.overrides import apply_sets
from adk_ray.service.plan import plan_trials
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import load_spec
from adk_ray.service.values import SpecError

LLM_SWEEPS = ("llm_ppo", "llm_dpo", "llm_dpo_offline", "llm_grpo", "llm_ipo", "llm_tau", "llm_pad")
MODELS = {("K-A", "p_prime"), ("A-K", "p_prime"), ("K-A", "p_dprime"), ("K-A", "final"), ("A-K", "aligned"),
          ("A-K", "final")}


@pytest.mark.parametrize("name", LLM_SWEEPS)
def test_llm_sweeps_plan_in_full_and_smoke(name):
    spec = load_spec(name)
    assert spec.world.name == "llm"
    full = plan_trials(spec)
    smoke = plan_trials(shrink(spec))
    assert full and smoke and len(smoke) <= len(full)
    for t in smoke:
        assert t.config.preset == "tiny" and max(t.config.iterations) <= 8 and len(t.config.seeds) == 1
    for t in full:
        assert t.config.preset == "gguf" and len(t.config.seeds) == 3


def test_llm_tau_sweeps_the_final_kd_temperature():
    taus = {t.config.final_kd_temperature for t in plan_trials(load_spec("llm_tau"))}
    assert taus == {0.9, 0.925, 0.95, 0.975, 1.0}


def test_llm_keys_are_checked_against_the_llm_config():
    spec = load_spec("llm_ppo")
    with pytest.raises(SpecError, match="unknown key 'kd_beta'.*valid keys: preset"):
        apply_sets(spec, ["kd_beta=2"])           # a MoG field
    with pytest.raises(SpecError, match="preset 'nope' is not one of tiny, gguf, gguf-smoke, full"):
        apply_sets(spec, ["preset=nope"])
    assert apply_sets(spec, ["final_kd_temperature=0.9,1.0"]).axes() == ["final_kd_temperature"]


def _rows(storage: Path, name: str):
    return ds.dataset(str(storage / name / "data")).to_table().to_pandas()


def _check_every_model(rows, trials) -> None:
    assert (rows.status == "ok").all(), rows.error.dropna().tolist()[:1]
    assert set(rows.trial_id) == {t.trial_id for t in trials}
    for t in trials:
        mine = rows[rows.trial_id == t.trial_id]
        models = mine[mine.stage != "selection_curve"]
        for seed in t.config.seeds:
            got = set(zip(models[models.seed == seed].pipeline, models[models.seed == seed].stage))
            assert got == MODELS, (t.trial_id, seed, got)
        for m in ("final_average_reward", "target_precision", "overall_precision", "overall_recall"):
            assert models[m].notna().all(), m
        picked = models[models.stage.isin(["final", "aligned"])]
        assert picked.selected_step.between(1, max(t.config.iterations)).all()
        curve = mine[mine.stage == "selection_curve"]
        assert set(curve.pipeline) == {"K-A", "A-K"}
        assert sorted(curve[curve.pipeline == "K-A"].step) == list(range(1, max(t.config.iterations) + 1))


# llm_ppo and llm_dpo run end to end on real weights (gguf-smoke) in tests/test_llm_gguf.py, which also
# opens their dashboard in Chromium; on the tiny preset only llm_pad runs here (PAD's mechanism test),
# reduced to its two PAD trials: p'' by seqkd with A-K's last KD by VPD, and VPD for both (the seqkd-only
# trials are the chain llm_ppo already runs), at one iteration count (one A-K distillation per trial).
PAD_SETS = ("kd_method=pad_vpd", "final_kd_method=pad_vpd", "iterations=4")


@pytest.mark.slow
def test_llm_pad_smoke_sweep_end_to_end(run_sweep, llm_storage):
    proc = run_sweep("llm_pad", "--smoke", *(f"--set={s}" for s in PAD_SETS), "--storage", str(llm_storage),
                     timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the console: each stage of a trial in one line under the trial's name, not the libraries' output of
    # every model load and save and every Ray Train report
    console = proc.stdout + proc.stderr
    assert re.search(r"pad_vpd p_dprime\w* done in [0-9.]+s", console), console[-4000:]
    for chatter in ("Loading weights", "Writing model shards", "Reporting training result"):
        assert chatter not in console, chatter
    trials = plan_trials(apply_sets(shrink(load_spec("llm_pad")), list(PAD_SETS)))
    assert {(t.config.kd_method, t.config.final_kd_method) for t in trials} == {("seqkd", "pad_vpd"), ("pad_vpd", "")}
    rows = _rows(llm_storage, "llm_pad")
    _check_every_model(rows, trials)
    curve = rows[rows.stage == "selection_curve"]
    assert curve.reward_std.notna().all()
    assert (llm_storage / "llm_pad" / "dashboard.html").exists()
