"""Aligners resume (issue #14): an alignment stopped after a checkpoint continues from it (policy, value
head, optimiser, schedule, step, random states) and ends bit-identical to an uninterrupted run.

Two tests on the tiny preset with small batches:
  * in one process (LocalBackend, torch engine): a PPO and an on-policy DPO run raise at iteration 3,
    after the state of iteration 2 was saved; `LocalBackend.align` finishes each from there.
  * on Ray Train (DeepSpeed ZeRO-2 worker, CPU): the worker process of a PPO run is killed (os._exit)
    at iteration 3, once Ray has registered the checkpoint of iteration 2; FailureConfig restarts the
    worker group, which resumes from that checkpoint. The uninterrupted run it is compared with runs in
    this process on the same DeepSpeed engine. (The Ray path was also run with an on-policy DPO run
    killed the same way, against an uninterrupted Ray run, with equal results; one kill keeps it short.)
Either way the final policy's every tensor (torch.equal), the whole curve (==) and the selection record
equal those of the same run left alone. The kill lives here, in a `RayBackend(worker_hook=...)` callback.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from llm_faults import kill_once

from adk_ray.worlds.llm import align
from adk_ray.worlds.llm.engine import TorchEngine
from adk_ray.worlds.llm.models import build_model, load_model, resolve_vocab, save_model
from adk_ray.worlds.llm.presets import get_preset
from adk_ray.worlds.llm.backends import RESUME_DIR, LocalBackend

TINY = get_preset("tiny")
VOCAB = resolve_vocab(TINY.tokenizer)
# Small batches (a few iterations take seconds on CPU); policy saved, and state kept, every 2 iterations.
SMALL = get_preset("tiny", align={
    "max_new_tokens": 8, "ppo": {"batch": 8, "mini_batch": 4},
    "dpo": {"responses": 8, "updates": 2, "mini_batch": 2, "grad_accum": 2},
    "checkpoint_every": 2, "selection_window": 2, "num_workers": 1})
ITERATIONS, KILL_AT = 5, 3              # checkpoints after 2, 4 (and 5); the kill comes after 2's
REWARD = {"threshold": 1.25, "scale": 10.0, "c": 0.5}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained tiny students as π_ref and p_target."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("resume_models")
    policy = save_model(build_model(TINY.p_dprime, VOCAB, 1), str(root / "policy"),
                        {"role": "p_dprime", "model_id": "tiny/p_dprime/test", "preset": "tiny"})
    target = save_model(build_model(TINY.p_target, VOCAB, 2), str(root / "target"),
                        {"role": "p_target", "model_id": "tiny/p_target/test", "preset": "tiny"})
    return {"policy": policy, "target": target}


def make_job(models, algorithm: str, out_dir, role: str = "p_dprime_KA") -> align.AlignJob:
    return align.AlignJob(role=role, algorithm=algorithm, beta=0.5, iterations=ITERATIONS,
                          policy_dir=models["policy"], target_dir=models["target"], reward=REWARD,
                          out_dir=str(out_dir), seed=3)


def assert_same_run(a: str, b: str) -> None:
    """Two finished runs: every policy checkpoint tensor equal, the curve and the selection equal."""
    assert align.read_curve(a) == align.read_curve(b)
    ra, rb = align.read_align(a), align.read_align(b)
    for key in ("selected_step", "checkpoints", "selected", "final"):
        assert ra[key] == rb[key], key
    for step in ra["checkpoints"]:
        pa = load_model(align.checkpoint_dir(a, step), dtype="float32").state_dict()
        pb = load_model(align.checkpoint_dir(b, step), dtype="float32").state_dict()
        assert pa.keys() == pb.keys()
        for name in pa:
            assert torch.equal(pa[name], pb[name]), (step, name)


class Stop(Exception):
    pass


@pytest.mark.parametrize("algorithm", ["ppo", "dpo_online"])
def test_local_backend_resumes_a_stopped_run(models, tmp_path, algorithm):
    whole = make_job(models, algorithm, tmp_path / "whole")
    LocalBackend().align(SMALL, VOCAB, [whole])
    assert not os.path.exists(os.path.join(whole.out_dir, RESUME_DIR))       # removed once the run ends

    stopped = make_job(models, algorithm, tmp_path / "stopped")
    state_dir = os.path.join(stopped.out_dir, RESUME_DIR)
    kwargs = align.engine_kwargs(stopped, SMALL, world=1)
    kwargs.pop("micro_batch")
    engine = TorchEngine(align.build_align_module(stopped, SMALL, VOCAB), **kwargs)

    def stop(row):
        if row["step"] == KILL_AT:
            raise Stop

    with pytest.raises(Stop):
        align.run_align(stopped, SMALL, VOCAB, engine, on_iteration=stop,
                        on_checkpoint=lambda step, curve: align.save_align_state(
                            os.path.join(state_dir, f"step-{step:06d}"), engine, stopped, step, curve))
    with open(os.path.join(state_dir, "step-000002", align.STATE_FILE)) as f:
        assert json.load(f)["step"] == 2
    assert not align.is_aligned(stopped.out_dir)
    # A state of another run is never loaded: the same directory does not fit a GRPO job.
    other = make_job(models, "grpo", tmp_path / "stopped")
    assert align.load_align_state(os.path.join(state_dir, "step-000002"), engine, other) is None

    LocalBackend().align(SMALL, VOCAB, [stopped])
    assert_same_run(whole.out_dir, stopped.out_dir)


# -- on Ray Train ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ray_aligner_resumes_after_its_worker_dies(models, ray_local, gloo_group, tmp_path):
    """The reference runs uninterrupted in this process on the same DeepSpeed engine the Ray worker
    builds (ZeRO-2, fp32, one thread), which saves a third worker-group start."""
    from adk_ray.service.llm_train import RayBackend
    from adk_ray.worlds.llm.engine import DeepSpeedModuleEngine
    whole = make_job(models, "ppo", tmp_path / "whole", role="ppo_run")
    engine = DeepSpeedModuleEngine(align.build_align_module(whole, SMALL, VOCAB), world_size=1,
                                   zero_stage=SMALL.train.zero_stage, bf16=False, **align.engine_kwargs(whole, SMALL))
    align.finish_align(whole, SMALL, align.run_align(whole, SMALL, VOCAB, engine))

    markers = tmp_path / "markers"
    markers.mkdir()
    killed = make_job(models, "ppo", tmp_path / "killed", role="ppo_run")
    RayBackend(storage_path=str(tmp_path / "ray_train"), max_failures=1,
               worker_hook=kill_once(str(markers), KILL_AT, kind="align")).align(SMALL, VOCAB, [killed])

    assert (markers / "ppo_run.killed").read_text() == str(KILL_AT)
    assert (markers / "ppo_run.resumed").read_text() == "2"         # the checkpoint before the kill
    assert_same_run(whole.out_dir, killed.out_dir)
