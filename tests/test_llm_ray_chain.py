"""The tiny LLM chain end to end on Ray: sampling and scoring as Ray tasks, every student trained by a
Ray Train TorchTrainer of 2 DeepSpeed ZeRO-2 workers on CPU (gloo), and one worker killed mid-training
to check the run resumes from its latest checkpoint rather than from step 0.

One chain run (module fixture) serves every test here; it takes 1.5–3 minutes on 2 busy cores.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from llm_faults import kill_once

pytestmark = pytest.mark.slow

FAIL_ROLE, FAIL_STEP = "p_prime", 100     # the last rank is killed here in the first attempt (test hook)


@pytest.fixture(scope="module")
def chain(ray_local, llm_storage, tmp_path_factory):
    from adk_ray.pipeline.llm_chain import run_distillation_chain
    from adk_ray.service.llm_train import RayBackend
    # Built where the LLM smoke sweeps (test_llm_sweep) look for it, so they reuse it; if they ran first,
    # in a fresh directory instead, so the kill-and-resume below really happens.
    workdir = llm_storage / "llm_cache"
    if workdir.exists():
        workdir = tmp_path_factory.mktemp("llm_chain")
    backend = RayBackend(worker_hook=kill_once(str(tmp_path_factory.mktemp("kill_markers")), FAIL_STEP, kind="train",
                                                   role=FAIL_ROLE))
    result = run_distillation_chain("tiny", 0, str(workdir), backend=backend)
    with open(workdir / "chain-tiny-seed0.json") as f:
        manifest = json.load(f)
    return result, manifest


def _train_info(manifest, role):
    with open(os.path.join(manifest["models"][role], "train.json")) as f:
        return json.load(f)


def test_rows_have_the_mog_columns(chain):
    from adk_ray.worlds.llm.metrics import METRICS
    result, _ = chain
    assert [(r["pipeline"], r["stage"]) for r in result.rows] == [("K-A", "p_prime"), ("A-K", "p_prime"),
                                                                   ("K-A", "p_dprime")]
    for r in result.rows:
        assert r["world"] == "llm" and r["seed"] == 0 and r["preset"] == "tiny"
        for m in METRICS:
            assert np.isfinite(r[m]), (m, r)


def test_students_trained_by_deepspeed_on_two_ray_workers(chain):
    _, manifest = chain
    for role in ("p_prime", "p_dprime", "p_target"):
        info = _train_info(manifest, role)
        assert info["engine"] == "deepspeed-zero2" and info["world_size"] == 2
        assert info["step"] == info["total_steps"] > 0
        assert np.isfinite(info["loss"])


def test_killed_worker_resumes_from_checkpoint(chain):
    """The last rank exited at step 100 of p' (of 128); the restarted group resumed from a reported
    checkpoint (a multiple of checkpoint_every below 100), not from 0. Ray registers a checkpoint when
    its controller polls the workers (every 2 s), so the very latest one before a crash may be missed."""
    from adk_ray.worlds.llm.presets import get_preset
    every = get_preset("tiny").train.checkpoint_every
    _, manifest = chain
    start = _train_info(manifest, FAIL_ROLE)["start_step"]
    assert 0 < start < FAIL_STEP and start % every == 0, start
    for role in ("p_dprime", "p_target"):
        # Not killed by the hook; Ray Train may still restart a group on its own when a loaded machine
        # misses its health check (seen once at load 13: p'' resumed from step 32), and then it must
        # resume from a checkpoint too, and finish.
        info = _train_info(manifest, role)
        assert info["start_step"] % every == 0 and info["step"] == info["total_steps"], info


def test_reward_threshold_is_stored_with_p_target(chain):
    from adk_ray.worlds.llm.metrics import read_reward_spec
    _, manifest = chain
    spec = read_reward_spec(manifest["models"]["p_target"])
    assert spec == manifest["reward"]
    assert spec["quantile"] == 0.9 and spec["scale"] == 10.0 and spec["c"] == 0.5
    assert 0 < spec["threshold"] < 10


def test_token_sets_record_their_generator(chain):
    from adk_ray.worlds.llm import data as token_data
    _, manifest = chain
    meta = token_data.read_meta(manifest["data"]["p_prime_target"])
    assert meta["temperature"] == 0.8 and meta["generator_role"] == "p_prime" and meta["top_p"] == 1.0
    # one part per sampling chunk, whichever Ray task drew it
    from adk_ray.worlds.llm.sampling import num_chunks
    chunks = num_chunks(meta["num_samples"], meta["chunk_size"])
    assert chunks > 1 and token_data.finished_chunks(manifest["data"]["p_prime_target"]) == set(range(chunks))


def test_directions_the_paper_predicts(chain):
    """p' (SFT on p*, the larger student) recalls p* better than p'' (KD from p' at τ=0.95, a smaller
    student): asserted, since it held for every seed tried (0–3, margins 0.12–0.14 nats/token). The
    other metrics are only printed: p'' sat closer to p_target for seeds 0–2 but tied at seed 3, and
    its overall precision came out *below* p''s for every seed (the small student's smoothing outweighs
    the τ=0.95 sharpening in this bigram world)."""
    result, _ = chain
    pp = next(r for r in result.rows if r["stage"] == "p_prime")
    pd = next(r for r in result.rows if r["stage"] == "p_dprime")
    print(f"\np'  recall {pp['overall_recall']:.3f} precision {pp['overall_precision']:.3f} "
          f"target {pp['target_precision']:.3f} reward {pp['final_average_reward']:.3f}"
          f"\np'' recall {pd['overall_recall']:.3f} precision {pd['overall_precision']:.3f} "
          f"target {pd['target_precision']:.3f} reward {pd['final_average_reward']:.3f}")
    assert pp["overall_recall"] > pd["overall_recall"]
