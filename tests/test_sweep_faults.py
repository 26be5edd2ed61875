"""Faults before any trial runs (issue items 1 and 6): a dead cluster file, an unreachable --address,
storage that cannot be opened, reached or read as this results schema. Each answer is bounded in time;
bad input is one line on stderr, exit 2, with nothing written and Ray never started.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clusters import free_port
from adk_ray.service.ray_options import PROBE_TIMEOUT_S
from adk_ray.service.schema import results_schema
from adk_ray.service.store import STORAGE_TIMEOUT_S
from adk_ray.service.worlds import MOG

REPO = Path(__file__).resolve().parents[1]
ERROR = "python -m adk_ray.sweep: error: "
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture
def private_ray(ray_env):
    """ray_env with a temp dir of its own, so that a cluster file written there is this test's alone."""
    tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")
    yield {**ray_env, "RAY_TMPDIR": tmp, "TMPDIR": tmp}
    shutil.rmtree(tmp, ignore_errors=True)


def sweep(env: dict, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "adk_ray.sweep", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - start


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), proc.stderr[-3000:]
    for f in fragments:
        assert f in lines[0], lines[0]


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def no_ray_started(env: dict) -> bool:
    return not (Path(env["RAY_TMPDIR"]) / "ray").exists()


@pytest.mark.slow
def test_dead_cluster_file_starts_a_fresh_local_cluster(private_ray, tmp_path, expect_complete):
    """A head that died without `ray stop` leaves ray_current_cluster behind; plain ray.init() would retry
    its address for minutes. The sweep probes it, says so in one line and runs on a fresh local cluster."""
    dead = f"127.0.0.1:{closed_port()}"
    cluster_file = Path(private_ray["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"
    cluster_file.parent.mkdir(parents=True)
    cluster_file.write_text(dead)
    storage = tmp_path / "results"
    # no --num-cpus/--no-dashboard: exactly the command a user types, which looks for a `ray start` cluster
    proc, took = sweep(private_ray, "mog_ppo", "--smoke", "--set", "beta=1.0", "--set", "seeds=1",
                       "--storage", str(storage))
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [ln for ln in proc.stderr.splitlines() if "does not answer" in ln]
    assert said == [f"Ray: the cluster that `ray start` left at {dead} does not answer (Connection refused); "
                    "starting a fresh local one"], proc.stderr[-3000:]
    assert "Failed to connect to GCS" not in proc.stderr
    assert took < 150, took
    from adk_ray.service.overrides import apply_sets
    from adk_ray.service.plan import plan_trials
    from adk_ray.service.smoke import shrink
    from adk_ray.service.spec import load_spec
    expect_complete(storage / "mog_ppo", plan_trials(apply_sets(shrink(load_spec("mog_ppo")), ["beta=1.0", "seeds=1"])))


def test_unreachable_address_is_one_line_exit_2(private_ray, tmp_path):
    storage = tmp_path / "results"
    addr = f"127.0.0.1:{closed_port()}"
    proc, took = sweep(private_ray, "mog_ppo", "--smoke", "--address", addr, "--storage", str(storage))
    one_line_error(proc, f"cannot reach Ray at {addr}", "refused")
    assert took < 30 and not storage.exists() and no_ray_started(private_ray)


def test_address_where_no_ray_answers_is_one_line_exit_2(private_ray, tmp_path):
    """Something listens (here: a socket that never speaks, as a dashboard's HTTP port given as --address
    or a dead head's port reused by another program would) but it is no Ray: refused after PROBE_TIMEOUT_S."""
    storage = tmp_path / "results"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        proc, took = sweep(private_ray, "mog_ppo", "--smoke", "--address", addr, "--storage", str(storage))
    one_line_error(proc, f"cannot reach Ray at {addr}", "no Ray cluster answered")
    assert PROBE_TIMEOUT_S <= took < PROBE_TIMEOUT_S + 25 and not storage.exists() and no_ray_started(private_ray)


@pytest.mark.parametrize("storage, says", [("s3://", "names no bucket"), ("s3:///x", "Missing bucket name")])
def test_storage_without_bucket_is_one_line_exit_2(private_ray, storage, says):
    proc, took = sweep({**private_ray, **FAKE_AWS}, "mog_ppo", "--smoke", "--storage", storage)
    one_line_error(proc, says)
    assert took < 30 and no_ray_started(private_ray)


def test_storage_endpoint_refusing_connections_is_one_line_exit_2(private_ray):
    env = {**private_ray, **FAKE_AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    proc, took = sweep(env, "mog_ppo", "--smoke", "--storage", "s3://bucket/results")
    one_line_error(proc, "storage s3://bucket/results cannot be used", "connect")
    assert took < STORAGE_TIMEOUT_S + 10 and no_ray_started(private_ray)


@pytest.mark.slow
def test_storage_endpoint_that_never_answers_is_one_line_exit_2(private_ray):
    """A blackhole (connections accepted, requests never answered): the SDK's own retries would take
    minutes; the sweep gives up after STORAGE_TIMEOUT_S."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        env = {**private_ray, **FAKE_AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        proc, took = sweep(env, "mog_ppo", "--smoke", "--storage", "s3://bucket/results")
    one_line_error(proc, "storage s3://bucket/results")
    assert took < STORAGE_TIMEOUT_S + 10 and no_ray_started(private_ray)


@pytest.mark.parametrize("stamp, says", [(None, "results schema 1 with other columns"),
                                         (b"0", "results schema 0;")])
def test_results_of_another_schema_are_refused(private_ray, tmp_path, stamp, says):
    """A results folder written by older code: one line, exit 2, the folder left exactly as it was."""
    data = tmp_path / "results" / "mog_ppo" / "data"
    data.mkdir(parents=True)
    schema = results_schema(MOG)
    if stamp is None:  # older code: no version stamp, and a column that came later is missing
        schema = schema.remove(schema.get_field_index("code_version")).remove_metadata()
    else:
        schema = schema.with_metadata({b"adk_ray.schema_version": stamp})
    pq.write_table(pa.Table.from_pylist([], schema=schema), data / "0123456789ab.parquet")
    def listing():  # every path, and the content time of every file (the probe's own file comes and goes)
        return sorted((p.relative_to(tmp_path), p.is_file() and p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    before = listing()
    proc, took = sweep(private_ray, "mog_ppo", "--smoke", "--storage", str(tmp_path / "results"))
    one_line_error(proc, says, "give another --storage")
    assert listing() == before
    assert took < 30 and no_ray_started(private_ray)


def test_s3_filesystem_reads_the_endpoint_variables_and_gets_timeouts(monkeypatch):
    """pyarrow's from_uri takes the endpoint from AWS_ENDPOINT_URL_S3 (before AWS_ENDPOINT_URL); open_storage
    keeps it and adds S3_TIMEOUT_S where the URI sets no timeout. No request is made."""
    import pyarrow.fs as pafs

    from adk_ray.storage import S3_TIMEOUT_S, open_storage

    for k, v in {**FAKE_AWS, "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:2"}.items():
        monkeypatch.setenv(k, v)
    fs, base = open_storage("s3://bucket/prefix")
    options = fs.__reduce__()[1][0]
    assert isinstance(fs, pafs.S3FileSystem) and base == "bucket/prefix"
    assert options["endpoint_override"] == "http://127.0.0.1:2"
    assert options["connect_timeout"] == options["request_timeout"] == S3_TIMEOUT_S
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert open_storage("s3://bucket/prefix")[0].__reduce__()[1][0]["endpoint_override"] == "http://127.0.0.1:1"


def test_storage_variables_reach_trials_unless_the_job_sets_them(monkeypatch):
    import json

    from adk_ray.service.runner import forwarded_env

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("UNRELATED_SECRET", "no")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    got = forwarded_env()
    assert got["AWS_ACCESS_KEY_ID"] == "key" and got["AWS_REGION"] == "eu-west-1" and "UNRELATED_SECRET" not in got
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"AWS_REGION": "x"}}}))
    assert "AWS_REGION" not in forwarded_env() and forwarded_env()["AWS_ACCESS_KEY_ID"] == "key"
