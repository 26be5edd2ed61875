"""Real clusters and servers for the service tests, each a context manager that cleans up after itself.

* `ray_head`: `ray start --head --block` bound to 127.0.0.1 (node IP, GCS, dashboard, client server),
  with its own RAY_TMPDIR and its own token (Ray 2.60's token authentication, RAY_AUTH_MODE=token).
* `ray_node`: a second node of that cluster on the same machine (`ray start --address ... --block`) on
  the loopback address 127.0.0.2, with ports of its own.
* `moto_s3`: an S3-compatible server (`moto_server` from the `moto[server]` package) on 127.0.0.1 with
  one bucket, and the standard AWS environment variables that point at it.

Every process is started in its own process group and stopped by signalling that group: `ray stop`
would kill every Ray process of this user on the machine, not just ours.

Why the loopback addresses: Ray turns `--node-ip-address=127.0.0.1` into the machine's outward address
unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with that setting it refuses to start a second node.
A second node also rewrites a head address of 127.0.0.1 given to `ray start --address`. So a head
alone runs with that setting, truly on 127.0.0.1; a head that gets a second node runs on 127.0.0.3 and
the node on 127.0.0.2: loopback too (all of 127.0.0.0/8 is), but addresses Ray leaves as they are.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HEAD_IP, NODE_IP, MULTI_HEAD_IP = "127.0.0.1", "127.0.0.2", "127.0.0.3"
START_TIMEOUT_S = 120
# A killed node is declared dead after about period x threshold; Ray's defaults take ~15-30 s.
FAST_HEALTH_CHECKS = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                      "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (any status: a 401 asking for the token is an answer)."""
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_group(args: list[str], env: dict, log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """`args` in a new process group (so `stop_group` ends it with all its children), output to `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 5) -> None:
    """Signal our own process group `sig`, then SIGKILL whatever is left after `grace_s` seconds."""
    for s, wait in ((sig, grace_s), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def wait_for(ready, what: str, proc: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"{what} exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} not up within {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def warm_workers_env() -> dict:
    """The setting the sweep gives a cluster it starts itself (`ray_options.WARM_WORKERS`), as the
    environment variables a `ray start` node reads it from."""
    from adk_ray.service.ray_options import WARM_WORKERS

    return {f"RAY_{k}": str(v) for k, v in WARM_WORKERS.items()}


def cluster_env(base: dict, tmpdir: str) -> dict:
    """`base` plus a private Ray temp dir, a fresh token and token mode, warm workers: what every process
    of one test cluster (head, nodes, drivers, `ray job submit`) shares."""
    env = {**base, "RAY_TMPDIR": tmpdir, "TMPDIR": tmpdir, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0", **warm_workers_env()}
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class RayHead:
    env: dict
    """Environment for every process that talks to this cluster: its temp dir, token, 127.0.0.1 binding."""
    gcs: str
    """HOST:PORT for --address and `ray start --address`."""
    dashboard: str
    """http://127.0.0.1:PORT, for `ray job submit --address`."""
    proc: subprocess.Popen
    log: Path


@contextlib.contextmanager
def ray_head(base_env: dict, logs: Path, num_cpus: int = 1, extra_env: dict | None = None,
             multi_node: bool = False):
    """A head node with `num_cpus` CPUs, on 127.0.0.1, or on 127.0.0.3 when `multi_node` (so that
    `ray_node` can join it); yields a RayHead, stops it on exit."""
    tmpdir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: socket paths must stay under 107 bytes
    ip = MULTI_HEAD_IP if multi_node else HEAD_IP
    env = {**cluster_env(base_env, tmpdir), **(extra_env or {})}
    if not multi_node:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    gcs, dash = free_port(), free_port()
    log = logs / "ray_head.log"
    proc = start_group(
        ["ray", "start", "--head", "--block", f"--node-ip-address={ip}", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--num-cpus={num_cpus}", "--disable-usage-stats"],
        env, log)
    head = RayHead(env=env, gcs=f"{ip}:{gcs}", dashboard=f"http://127.0.0.1:{dash}", proc=proc, log=log)
    try:
        wait_for(lambda: answers(f"{head.dashboard}/api/version"), "the Ray head", proc, log)
        yield head
    finally:
        stop_group(proc)
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def ray_node(head: RayHead, logs: Path, num_cpus: int = 1, name: str = "node2", extra_env: dict | None = None):
    """A second node of `head`'s cluster (started with multi_node=True) on 127.0.0.2; yields its `ray start --block` process, whose
    group holds the node's raylet and workers (so `stop_group(proc, signal.SIGKILL)` loses the node).
    `extra_env` is added to the node's environment (its workers inherit it)."""
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in head.env, "start the head with multi_node=True"
    env = {**head.env, **(extra_env or {})}
    log = logs / f"ray_{name}.log"
    low = 30000 + secrets.randbelow(20000)
    proc = start_group(
        ["ray", "start", f"--address={head.gcs}", "--block", f"--node-ip-address={NODE_IP}",
         f"--num-cpus={num_cpus}", f"--node-manager-port={free_port(NODE_IP)}",
         f"--object-manager-port={free_port(NODE_IP)}", f"--dashboard-agent-listen-port={free_port(NODE_IP)}",
         f"--metrics-export-port={free_port(NODE_IP)}", f"--runtime-env-agent-port={free_port(NODE_IP)}",
         f"--min-worker-port={low}", f"--max-worker-port={low + 200}", "--disable-usage-stats"],
        env, log)
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text(), f"the Ray node {name}", proc, log)
        yield proc
    finally:
        stop_group(proc)


def descendants(pid: int) -> list:
    """psutil processes below `pid` (children of children included); [] when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_node(proc: subprocess.Popen, timeout: float = 20) -> list[int]:
    """SIGKILL every process of a `ray_node` at once (its group, and the workers, which Ray starts in
    groups of their own), as a lost machine would; returns their pids once all are gone."""
    import psutil

    victims = descendants(proc.pid)
    stop_group(proc, signal.SIGKILL)
    for p in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    gone, alive = psutil.wait_procs(victims, timeout=timeout)
    assert not alive, f"still running after SIGKILL: {alive}"
    return [proc.pid] + [p.pid for p in victims]


@contextlib.contextmanager
def moto_s3(logs: Path, bucket: str = "adk-ray-test"):
    """An S3 server on 127.0.0.1 with `bucket`; yields the AWS_* variables that point clients at it."""
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    log = logs / "moto_server.log"
    server_env = {**os.environ, **env}
    proc = start_group([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], server_env, log)
    try:
        wait_for(lambda: answers(f"{env['AWS_ENDPOINT_URL']}/moto-api/"), "moto_server", proc, log, timeout=60)
        import boto3  # moto's own dependency

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        yield env
    finally:
        stop_group(proc)
