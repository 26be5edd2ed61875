"""The LLM world's artefacts at a storage location (issue #13): sampling that streams out a part per chunk
and resumes after a kill, and a whole chain whose work directory is a bucket on a real S3-compatible
server (moto_server on 127.0.0.1), which must give the numbers of the same chain on a local disk.

No Ray here: the stages run in-process (LocalBackend); tests/test_llm_cluster.py runs them on a
two-node Ray cluster over the same kind of bucket.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adk_ray import storage
from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm.config import LLMTrialConfig
from adk_ray.worlds.llm.models import build_model, resolve_vocab, save_model
from adk_ray.worlds.llm.presets import get_preset
from adk_ray.worlds.llm.sampling import sample_shard

sys.path.insert(0, str(Path(__file__).parent))
from clusters import moto_s3, stop_group  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = get_preset("tiny")
VOCAB = resolve_vocab(TINY.tokenizer)
N, CHUNK, NEW = 40 * 128, 128, 48          # 40 chunks: a kill lands mid-stage


@pytest.fixture(scope="module")
def truth_dir(tmp_path_factory) -> str:
    torch.set_num_threads(1)
    path = str(tmp_path_factory.mktemp("truth") / "truth")
    save_model(build_model(TINY.truth, VOCAB, TINY.truth_seed), path, {"role": "truth", "model_id": "tiny/truth"})
    return path


def _sample(model: str, out: str) -> list[int]:
    return sample_shard(model, out, VOCAB, list(range(N // CHUNK)), N, CHUNK, NEW, 1.0, 1.0, seed=5)


def test_sampling_writes_a_part_per_chunk_and_a_rerun_draws_only_what_a_kill_lost(truth_dir, tmp_path):
    """A sampling worker SIGKILLed mid-stage leaves whole parts only (one per chunk drawn); the re-run
    draws exactly the chunks without a part, rewrites none of the others, and the set equals one drawn
    straight through."""
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    assert _sample(truth_dir, straight) == list(range(N // CHUNK))

    code = ("import torch; torch.set_num_threads(1); import sys; sys.path.insert(0, 'tests'); "
            "import test_llm_storage as t; t._sample(sys.argv[1], sys.argv[2])")
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen([sys.executable, "-c", code, truth_dir, killed], cwd=REPO, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(token_data.finished_chunks(killed)) < 3:
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no parts within 120 s"
            time.sleep(0.01)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        stop_group(worker, signal.SIGKILL)
    kept = token_data.finished_chunks(killed)
    assert 3 <= len(kept) < N // CHUNK, "the worker finished before the kill"
    stamps = {c: os.stat(os.path.join(killed, token_data.part_name(c) + ".parquet")).st_mtime_ns for c in kept}

    redrawn = _sample(truth_dir, killed)
    assert redrawn == sorted(set(range(N // CHUNK)) - kept)
    assert {c: os.stat(os.path.join(killed, token_data.part_name(c) + ".parquet")).st_mtime_ns
            for c in kept} == stamps
    a, b = token_data.read_tokens(straight, VOCAB.pad_id), token_data.read_tokens(killed, VOCAB.pad_id)
    assert len(a) == len(b) == N and (a.tokens == b.tokens).all() and (a.lengths == b.lengths).all()
    print(f"killed after {len(kept)} of {N // CHUNK} chunks; the re-run drew {len(redrawn)}")


SMALL = LLMTrialConfig(algorithm="ppo", preset="tiny", seeds=(0,), iterations=(2,), train_samples=256,
                       eval_samples=64, checkpoint_every=2)


def _chain(workdir: str):
    from adk_ray.pipeline.llm_chain import Chain
    preset = SMALL.resolved_preset()
    chain = Chain(preset.replace(train=dataclasses.replace(preset.train, epochs=1)), 0, workdir)
    return chain, chain.run()


def test_a_chain_on_object_storage_gives_the_local_numbers(tmp_path, monkeypatch):
    """The distillation chain with its work directory in a bucket: every artefact lands there (parts per
    chunk, models, scores, the reward spec), the metrics equal a local-disk run's to the last bit, and a
    second run on another machine's empty local dir finds everything in the bucket and runs no stage."""
    import boto3

    _, local = _chain(str(tmp_path / "local"))
    with moto_s3(tmp_path) as aws:
        for k, v in aws.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv(storage.LOCAL_DIR_ENV, str(tmp_path / "node_a"))
        uri = "s3://adk-ray-test/llm_cache"
        chain, remote = _chain(uri)
        assert remote["metrics"] == local["metrics"] and remote["reward"] == local["reward"]
        assert remote["models"]["p_target"].startswith(uri + "/models/p_target-")

        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_REGION"])
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="adk-ray-test")
                for o in page.get("Contents", [])]
        truth_train = storage.basename(remote["data"]["truth_train"])
        parts = [k for k in keys if f"/data/{truth_train}/part-" in k]
        assert len(parts) == 256 // TINY.sampling.chunk_size and f"llm_cache/data/{truth_train}/dataset.json" in keys
        for role in ("p_prime", "p_dprime", "p_target"):
            name = storage.basename(remote["models"][role])
            assert {f"llm_cache/models/{name}/{f}" for f in ("model.json", "train.json", "model.safetensors")} <= set(keys)
        assert any(k.startswith("llm_cache/scores/") and k.endswith(".npy") for k in keys)
        assert any(k.endswith("/reward.json") for k in keys)
        assert not [k for k in keys if k.endswith(".tmp")]

        monkeypatch.setenv(storage.LOCAL_DIR_ENV, str(tmp_path / "node_b"))
        again, manifest = _chain(uri)
        assert again.timings == {} and manifest["metrics"] == local["metrics"]
        print(f"{len(keys)} objects in the bucket; metrics equal to the local run's: {remote['metrics']}")
