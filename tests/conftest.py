"""Shared fixtures: running the sweep CLI for real (subprocess, embedded Ray) and one smoke sweep.

Every Ray this suite starts lives under a private RAY_TMPDIR, so `ray.init()` here never attaches to
another Ray on the machine (and nothing else attaches to ours).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as ds
import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEP_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def ray_env():
    """Environment for subprocesses that start Ray: a private, short temp dir (socket paths must stay
    under 107 bytes; Tune's temp dirs go there too), no usage stats, unbuffered output."""
    from adk_ray.service.ray_options import LOCAL_TRAIN_ENV

    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    # Ray Train's fast poll, as on the cluster a sweep starts: here also for `ray start` clusters built on it
    env = {**os.environ, "RAY_TMPDIR": tmp, "TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
           "PYTHONUNBUFFERED": "1", **LOCAL_TRAIN_ENV}
    env.pop("RAY_ADDRESS", None)
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def run_sweep(ray_env):
    """run_sweep(*args) -> CompletedProcess of `python -m adk_ray.sweep ARGS` on an embedded 2-CPU Ray."""

    def run(*args: str, embedded: bool = True, timeout: float = SWEEP_TIMEOUT_S) -> subprocess.CompletedProcess:
        extra = ["--num-cpus", "2", "--no-dashboard"] if embedded else []
        return subprocess.run([sys.executable, "-m", "adk_ray.sweep", *args, *extra], cwd=REPO, env=ray_env,
                              capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture(scope="session")
def smoke_results(run_sweep, tmp_path_factory) -> Path:
    """Results directory of `mog_ppo --smoke` (data/, models/, sweep.json, dashboard.html if drawable)."""
    storage = tmp_path_factory.mktemp("smoke_storage")
    proc = run_sweep("mog_ppo", "--smoke", "--storage", str(storage))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return storage / "mog_ppo"


def read_rows(results: Path | str):
    """A results directory's data as pandas: a local folder, or a URI such as s3://bucket/prefix/sweep."""
    from adk_ray.storage import open_storage

    fs, base = open_storage(str(results))
    return ds.dataset(f"{base}/data", filesystem=fs).to_table().to_pandas()


@pytest.fixture(scope="session")
def expect_complete():
    """expect_complete(results_dir, planned_trials): every planned trial's rows are there exactly once,
    with a final model for every (pipeline, seed, iteration count), and nothing else."""

    def check(results: Path, trials) -> None:
        rows = read_rows(results)
        assert set(rows.trial_id) == {t.trial_id for t in trials}
        assert not rows.duplicated(["trial_id", "pipeline", "stage", "seed", "iterations", "step"]).any()
        for t in trials:
            mine = rows[rows.trial_id == t.trial_id]
            finals = mine[mine.stage == "final"]
            assert len(finals) == 2 * len(t.config.seeds) * len(t.config.iterations)
            assert set(zip(finals.pipeline, finals.seed, finals.iterations)) == {
                (p, s, i) for p in ("K-A", "A-K") for s in t.config.seeds for i in t.config.iterations}
            assert (mine.beta == t.config.beta).all()
    return check


@pytest.fixture(scope="session")
def llm_storage(tmp_path_factory) -> Path:
    """One results storage for every LLM-world test of the session: its llm_cache/ holds the tiny preset's
    chain (p*, p', p'', p_target), built once by whichever test comes first and reused by the others."""
    return tmp_path_factory.mktemp("llm_storage")


@pytest.fixture(scope="module")
def ray_local():
    """A private 2-CPU Ray in this process, on 127.0.0.1 with its own RAY_TMPDIR, set up as the sweep sets
    up the cluster it starts (warm workers, Ray Train's 0.5 s poll: `ray_options.WARM_WORKERS`,
    `LOCAL_TRAIN_ENV`): for tests that drive `RayBackend` or a Ray Train trainer directly."""
    import ray

    from adk_ray.service.ray_options import LOCAL_TRAIN_ENV, WARM_WORKERS

    temp = tempfile.mkdtemp(prefix="rtl", dir="/tmp")   # short: socket paths must stay under 107 bytes
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED", *LOCAL_TRAIN_ENV)}
    os.environ.update({"RAY_TMPDIR": temp, "RAY_USAGE_STATS_ENABLED": "0", **LOCAL_TRAIN_ENV})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             _system_config=WARM_WORKERS)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def gloo_group(monkeypatch):
    """A one-process gloo group on a free local port (what Ray Train gives a worker), torn down after."""
    import socket

    import torch.distributed as dist
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                           LOCAL_RANK="0").items():
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    import deepspeed.comm
    if deepspeed.comm.is_initialized():
        deepspeed.comm.destroy_process_group()       # also drops the groups DeepSpeed cached for this world
    else:
        dist.destroy_process_group()
    assert not dist.is_initialized()
