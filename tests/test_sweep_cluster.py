"""A sweep on a real two-node Ray cluster loses a node; a sweep on S3 (a moto server) loses its driver.

Both clusters are `ray start` processes bound to loopback addresses with their own temp dirs and
tokens (tests/clusters.py); the S3 server is `moto_server` on 127.0.0.1. Nothing leaves the machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusters import FAST_HEALTH_CHECKS, descendants, kill_node, moto_s3, ray_head, ray_node, stop_group
from conftest import read_rows
from adk_ray.service.overrides import apply_sets
from adk_ray.service.plan import plan_trials
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import load_spec

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SETS = ("beta=0.05,0.1,0.3",)
"""mog_ppo --smoke with three β values: 3 trials of 2 seeds, iterations 15 and 30."""
LONG = (*SETS, "iterations=2000")
"""The same with 2000 alignment iterations: trials long enough (over 10 s on a quiet 2-core machine) to be
killed mid-way; at 600, once the MoG step got faster, a quiet machine finished the trial (5 s) before the
kill landed."""


def planned(sets=SETS):
    return plan_trials(apply_sets(shrink(load_spec("mog_ppo")), list(sets)))


def start_driver(env: dict, log: Path, *args: str, sets=SETS) -> subprocess.Popen:
    """The sweep CLI in its own session (so a SIGKILL of it is a crash of the driver alone)."""
    argv = [sys.executable, "-m", "adk_ray.sweep", "mog_ppo", "--smoke", *(f"--set={s}" for s in sets), *args]
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would stall the driver
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def wait_until(cond, what: str, proc: subprocess.Popen, log: Path, timeout: float = 180, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (found := cond()):
        assert proc.poll() is None, f"driver exited before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(poll)
    return found


def running_trial(node: subprocess.Popen):
    """A process of `node` that is running a Tune trial: Ray titles an actor's process `ray::CLASS.METHOD`,
    here `ray::grid_trial.train` (service/progress.named_trainable keeps the function's name)."""
    for p in descendants(node.pid):
        try:
            title = " ".join(p.cmdline())
            if title.startswith("ray::") and title.split()[0].endswith(".train"):
                return p
        except Exception:  # noqa: BLE001 - gone while we looked
            continue
    return None


def test_lost_node_mid_sweep(ray_env, tmp_path, expect_complete):
    """Head and second node with 1 CPU each, 1 CPU per trial: two trials run at once, one per node.
    While a trial runs on the second node, every process of that node is SIGKILLed; Tune restarts the
    lost trial on the head (runner.TRIAL_RETRIES) and the sweep ends with every row exactly once."""
    storage = tmp_path / "results"
    with ray_head(ray_env, tmp_path, num_cpus=1, extra_env=FAST_HEALTH_CHECKS, multi_node=True) as head, \
            ray_node(head, tmp_path, num_cpus=1) as node:
        log = tmp_path / "driver.log"
        start = time.monotonic()
        driver = start_driver(head.env, log, "--address", head.gcs, "--storage", str(storage), sets=LONG)
        try:
            victim = wait_until(lambda: running_trial(node), "trial on the second node", driver, log)
            time.sleep(1.0)  # mid-trial, not at its first instruction
            killed_at = time.monotonic() - start
            killed = kill_node(node)
            assert victim.pid in killed
            rc = driver.wait(timeout=240)
        finally:
            stop_group(driver)
        took = time.monotonic() - start
    err = log.read_text()
    print(f"node killed ({len(killed)} processes) {killed_at:.1f} s into the sweep; sweep ended after {took:.1f} s, exit {rc}")
    print(*[ln for ln in err.splitlines() if "lost its process" in ln], sep="\n")
    assert rc == 0, err[-4000:]
    assert "lost its process" in err and "restarting it" in err, err[-4000:]
    assert "mog_ppo: 3 ok, 0 failed" in err, err[-4000:]
    expect_complete(storage / "mog_ppo", planned(LONG))
    rows = read_rows(storage / "mog_ppo")
    print("rows per trial:", rows.groupby("trial_id").size().to_dict())
    assert (rows.status == "ok").all()


def test_s3_storage_driver_killed_then_resumed(ray_env, tmp_path, expect_complete, monkeypatch):
    """--storage s3://... on a moto server: credentials and endpoint only in the driver's AWS_* variables
    (the cluster was started without them), the driver SIGKILLed after its first trial, the same command
    resumes, finished objects are untouched, and the dashboard is drawn from the bucket."""
    import boto3

    with moto_s3(tmp_path) as aws, ray_head(ray_env, tmp_path, num_cpus=2) as head:
        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_REGION"],
                          aws_access_key_id=aws["AWS_ACCESS_KEY_ID"], aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])
        env = {**head.env, **aws}
        for k, v in aws.items():  # this process reads the bucket too
            monkeypatch.setenv(k, v)
        uri, prefix = "s3://adk-ray-test/results", "results/mog_ppo/data/"
        args = ["--address", head.gcs, "--storage", uri, "--max-concurrent", "1"]

        def data_objects() -> dict:
            listed = s3.list_objects_v2(Bucket="adk-ray-test", Prefix=prefix).get("Contents", [])
            return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listed if o["Key"].endswith(".parquet")}

        log = tmp_path / "driver1.log"
        start = time.monotonic()
        driver = start_driver(env, log, *args)
        try:
            wait_until(data_objects, "data object in the bucket", driver, log, poll=0.05)
            os.kill(driver.pid, signal.SIGKILL)  # the driver only, as a crash would
            driver.wait(timeout=30)
        finally:
            stop_group(driver)
        killed_at = time.monotonic() - start
        survivors = data_objects()
        assert 1 <= len(survivors) < 3, "the sweep finished before it could be killed"

        resumed = subprocess.run([sys.executable, "-m", "adk_ray.sweep", "mog_ppo", "--smoke",
                                  *(f"--set={s}" for s in SETS), *args],
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        took = time.monotonic() - start
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        assert f"{len(survivors)} already finished, {3 - len(survivors)} to run" in resumed.stderr
        after = data_objects()
        assert {k: after[k] for k in survivors} == survivors  # finished rows not rewritten
        expect_complete(f"{uri}/mog_ppo", planned())
        rows = read_rows(f"{uri}/mog_ppo")
        print(f"driver killed {killed_at:.1f} s in with {len(survivors)} trial(s) stored; resumed run ended at "
              f"{took:.1f} s; rows per trial: {rows.groupby('trial_id').size().to_dict()}")

        page = tmp_path / "dashboard.html"
        drawn = subprocess.run([sys.executable, "-m", "adk_ray.dashboard", f"{uri}/mog_ppo", "-o", str(page)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert drawn.returncode == 0, drawn.stderr[-3000:]
        assert page.stat().st_size > 100_000 and "plotly" in page.read_text()[:200_000].lower()
        assert s3.head_object(Bucket="adk-ray-test", Key="results/mog_ppo/dashboard.html")["ContentLength"] > 0
