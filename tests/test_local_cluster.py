"""The cluster a sweep starts itself (`runner.connect` with no address) keeps idle worker processes warm
and gives Ray Train's controller a 0.5 s poll (`ray_options.WARM_WORKERS`, `LOCAL_TRAIN_ENV`)."""
from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, os, time
import ray
from adk_ray.service.ray_options import RayOptions
from adk_ray.service.runner import connect

connect(RayOptions(num_cpus=1, dashboard=False))

@ray.remote(num_cpus=0.5)
def where():
    time.sleep(1)
    return os.getpid(), os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")

first = ray.get([where.remote(), where.remote()])
time.sleep(5)
second = ray.get([where.remote(), where.remote()])
print(json.dumps({"first": sorted(p for p, _ in first), "second": sorted(p for p, _ in second),
                  "poll": sorted({str(e) for _, e in first + second})}))
"""


def test_idle_workers_stay_warm_and_train_polls_fast(ray_env):
    # Two half-CPU tasks at once need two worker processes on a 1-CPU node; with Ray's default one of
    # them is killed 1 s after it goes idle, so the second pair would run in a new process.
    env = {k: v for k, v in ray_env.items() if k != "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["second"] == got["first"]
    assert got["poll"] == ["0.5"]
