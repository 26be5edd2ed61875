"""`ray job submit -- python -m adk_ray.sweep ...` against a real `ray start --head` cluster on 127.0.0.1.

The cluster is started with `--block` in its own process group and stopped by signalling that group:
`ray stop` would kill every Ray process of this user on the machine, not just ours.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from adk_ray.service.plan import plan_trials
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import load_spec

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(ray_env, tmp_path):
    """(env, dashboard port) of a fresh head node; env carries its private temp dir and auth token."""
    env = {**ray_env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rj", dir="/tmp"),
           # Ray 2.60 clusters use token auth; `ray job submit` sends the token only in token mode.
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    dash = free_port()
    log = tmp_path / "ray_start.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=2", "--disable-usage-stats"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _answers(f"http://127.0.0.1:{dash}/api/version"):
            assert head.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray dashboard did not come up"
            time.sleep(1)
        yield env, dash
    finally:
        _stop_group(head)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:  # up, merely asking for the token
        return True
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM our own `ray start --block` and everything in its group; SIGKILL what lingers."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            proc.poll()
            time.sleep(0.5)


def test_ray_job_submit_runs_the_sweep_on_the_cluster(ray_head, tmp_path, expect_complete):
    env, dash = ray_head
    storage = tmp_path / "results"
    proc = subprocess.run(
        ["ray", "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
         "python", "-m", "adk_ray.sweep", "mog_ppo", "--smoke", "--storage", str(storage)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    expect_complete(storage / "mog_ppo", plan_trials(shrink(load_spec("mog_ppo"))))
