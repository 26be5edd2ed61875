"""Fault injection for the LLM world's Ray Train runs, shared by the tests that kill a worker.

It lives in tests/, not in the package: production code only offers the generic
`RayBackend(worker_hook=...)` callback, called in every worker after each training step and alignment
iteration with a dict (kind, role, rank, world_size, step, resumed_from, run_dir).
"""
from __future__ import annotations

import json
import os
import sys
import time

import ray.cloudpickle

# Ray's workers cannot import this test-only module (tests/ is not on their path): its hooks travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def wait_for_checkpoint(run_dir: str, role: str, timeout: float = 60.0) -> None:
    """Block until Ray Train's controller has registered a checkpoint of `role`'s run. The controller polls
    its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; a checkpoint reported but not yet polled would
    be lost with the worker, and the restarted group would resume from an earlier one."""
    snapshot = os.path.join(run_dir, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(snapshot) as f:
                latest = json.load(f).get("latest_checkpoint_result")
            if latest and role in json.dumps(latest):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)


def kill_once(marker_dir: str, step: int, kind: str | None = None, role: str | None = None):
    """A worker_hook that kills the last rank's process (os._exit: no cleanup, as a lost node would) at
    `step` of each matching run's first attempt (once per role; `kind`/`role` None match any), after its
    latest checkpoint is registered. Markers in `marker_dir`: `<role>.killed` holds the step killed at,
    `<role>.resumed` the step a restarted group resumed from."""

    def hook(info: dict) -> None:
        this = info["role"]
        if (kind and info["kind"] != kind) or (role and this != role):
            return
        if info["resumed_from"] and info["rank"] == 0:
            with open(os.path.join(marker_dir, f"{this}.resumed"), "w") as f:
                f.write(str(info["resumed_from"]))
        killed = os.path.join(marker_dir, f"{this}.killed")
        if info["step"] != step or info["rank"] != info["world_size"] - 1 or os.path.exists(killed):
            return
        wait_for_checkpoint(info["run_dir"], this)
        with open(killed, "w") as f:
            f.write(str(step))
        os._exit(1)

    return hook
