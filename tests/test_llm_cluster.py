"""The LLM world on a real two-node Ray cluster with every artefact in a bucket (issue #13).

A head and a second node (`ray start`, loopback addresses, tests/clusters.py) with one CPU each, so a
two-worker Ray Train run and the two sampling/scoring tasks of a stage span both nodes; results and the
LLM cache on a moto S3 server on 127.0.0.1. Each node has its own local dir for copies of models
(ADK_RAY_LOCAL_DIR), so anything one node wrote reaches the other only through the bucket.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from clusters import moto_s3, ray_head, ray_node
from conftest import read_rows
from adk_ray.service.overrides import apply_sets
from adk_ray.service.plan import plan_trials
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import load_spec
from adk_ray.storage import LOCAL_DIR_ENV

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SETS = ("train_samples=512", "eval_samples=64", "iterations=4")
"""llm_ppo --smoke with smaller token sets (the tiny preset's 4096 training sequences cost minutes here) and one
iteration count (one A-K distillation instead of two). 512 sequences are two sampling chunks, so a sampling
stage has a task for each node."""
BUCKET, PREFIX = "adk-ray-test", "results"


def test_llm_ppo_smoke_on_two_nodes_with_storage_in_a_bucket(ray_env, tmp_path, expect_complete, monkeypatch):
    import boto3

    head_dir, node_dir = tmp_path / "head_local", tmp_path / "node2_local"
    with moto_s3(tmp_path, BUCKET) as aws, \
            ray_head(ray_env, tmp_path, num_cpus=1, multi_node=True, extra_env={LOCAL_DIR_ENV: str(head_dir)}) as head, \
            ray_node(head, tmp_path, num_cpus=1, extra_env={LOCAL_DIR_ENV: str(node_dir)}):
        uri = f"s3://{BUCKET}/{PREFIX}"
        env = {**head.env, **aws}     # the nodes were started without the AWS variables: the job forwards them
        for k, v in aws.items():      # this process reads the bucket too
            monkeypatch.setenv(k, v)
        proc = subprocess.run([sys.executable, "-m", "adk_ray.sweep", "llm_ppo", "--smoke",
                               *(f"--set={s}" for s in SETS), "--address", head.gcs, "--storage", uri],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "llm_ppo: 1 ok, 0 failed" in proc.stderr

        trials = plan_trials(apply_sets(shrink(load_spec("llm_ppo")), list(SETS)))
        expect_complete(f"{uri}/llm_ppo", trials)
        rows = read_rows(f"{uri}/llm_ppo")
        models = set(zip(rows.pipeline, rows.stage))
        assert {("K-A", "p_prime"), ("A-K", "p_prime"), ("K-A", "p_dprime"), ("K-A", "final"), ("A-K", "aligned"),
                ("A-K", "final"), ("K-A", "selection_curve"), ("A-K", "selection_curve")} <= models
        for stage in ("p_prime", "p_dprime", "aligned", "final"):
            for m in ("overall_precision", "overall_recall", "target_precision", "final_average_reward"):
                assert all(math.isfinite(v) for v in rows[rows.stage == stage][m]), (stage, m)

        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_REGION"],
                          aws_access_key_id=aws["AWS_ACCESS_KEY_ID"], aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
                for o in page.get("Contents", [])]
        cache = f"{PREFIX}/llm_cache/"
        for role in ("truth", "p_prime", "p_dprime", "p_target", "p_dprime_AK"):
            assert any(k.startswith(f"{cache}models/{role}-") and k.endswith("/model.json") for k in keys), role
        assert any(k.startswith(f"{cache}aligned/") and "/ckpt-" in k for k in keys)
        assert any(k.startswith(f"{cache}data/truth_train-") and "/part-" in k for k in keys)
        assert any(k.startswith(f"{cache}scores/") for k in keys)
        # Ray Train's checkpoints (here the aligners', every 2 iterations) are in the bucket too
        assert any(k.startswith(f"{cache}ray_train/align-") and "/checkpoint_" in k for k in keys)
        assert any(k.startswith(f"{PREFIX}/llm_ppo/data/") and k.endswith(".parquet") for k in keys)

        # the second node read models from the bucket into its own local dir (nothing is shared on disk)
        copied = list((node_dir / "s3" / BUCKET / PREFIX / "llm_cache").rglob("model.json"))
        assert copied, f"no model copied to the second node's local dir {node_dir}"
        print(f"{len(keys)} objects in the bucket; the second node copied {len(copied)} models; "
              f"{len(rows)} rows")
