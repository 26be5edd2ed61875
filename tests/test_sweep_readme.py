"""README's cluster commands, read from README.md and run as printed on a "fresh machine" (an empty HOME,
so no token exists yet, and a private Ray temp dir): the token, `ray start --head`, `ray job submit` of
the smoke sweep to the dashboard address, `ray stop`.

What the test changes, and only so that it cannot collide with anything else on this machine: `ray
start --head` gets free ports, --block (so that the test owns its process group) and 2 CPUs; the
dashboard port and the /tmp storage path in `ray job submit` are replaced by those ports and a temp
dir; `ray stop` (which stops every Ray process of the user) becomes stopping that process group.
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps the head on 127.0.0.1.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
import shutil
from pathlib import Path

import pytest

from clusters import answers, free_port, start_group, stop_group, wait_for
from adk_ray.service.plan import plan_trials
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import load_spec

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def readme_cluster_block() -> list[str]:
    """The command lines (comments dropped) of README's bash block that starts a head."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    block = next(b for b in blocks if "ray start --head" in b)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_readme_block_is_the_expected_sequence():
    words = [shlex.split(line)[:3] for line in readme_cluster_block()]
    assert words == [["export", "RAY_AUTH_MODE=token"], ["ray", "get-auth-token", "--generate"],
                     ["ray", "start", "--head"], ["ray", "job", "submit"], ["ray", "stop"]]


def test_readme_cluster_commands_run_as_printed(ray_env, tmp_path, expect_complete):
    tmpdir = tempfile.mkdtemp(prefix="rr", dir="/tmp")
    home = tmp_path / "home"
    home.mkdir()
    env = {**ray_env, "HOME": str(home), "RAY_TMPDIR": tmpdir, "TMPDIR": tmpdir,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS"):
        env.pop(k, None)
    dash, storage = free_port(), tmp_path / "results"
    head = None
    try:
        for line in readme_cluster_block():
            args = shlex.split(line)
            if args[0] == "export":
                key, _, value = args[1].partition("=")
                env[key] = value
            elif args[:3] == ["ray", "start", "--head"]:
                log = tmp_path / "head.log"
                head = start_group(args + ["--block", f"--port={free_port()}", f"--dashboard-port={dash}",
                                           f"--ray-client-server-port={free_port()}",
                                           f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=2",
                                           "--disable-usage-stats"], env, log, cwd=REPO)
                wait_for(lambda: answers(f"http://127.0.0.1:{dash}/api/version")
                         and "dashboard at" in log.read_text(), "the Ray head", head, log)
                assert f"127.0.0.1:{dash}" in log.read_text().split("dashboard at", 1)[1]  # the dashboard address README promises
            elif args[:3] == ["ray", "job", "submit"]:
                args = [a.replace("127.0.0.1:8265", f"127.0.0.1:{dash}").replace("/tmp/adk_results", str(storage))
                        for a in args]
                proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
                assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
                assert "succeeded" in proc.stdout + proc.stderr
            elif args == ["ray", "stop"]:
                # first, why README exports RAY_AUTH_MODE=token: a client that sends no token is refused
                bare = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
                bare["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
                proc = subprocess.run(["ray", "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--", "true"],
                                      cwd=REPO, env=bare, capture_output=True, text=True, timeout=120)
                assert proc.returncode != 0 and "token" in (proc.stdout + proc.stderr).lower()
                stop_group(head)
                head = None
            else:
                proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
                assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert (home / ".ray" / "auth_token").exists()
        expect_complete(storage / "mog_ppo", plan_trials(shrink(load_spec("mog_ppo"))))
    finally:
        if head is not None:
            stop_group(head)
        shutil.rmtree(tmpdir, ignore_errors=True)

