"""How the sweep reaches Ray and places trials on it (kept free of Ray imports for the CLI)."""
from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass

from adk_ray.service.values import SpecError
from adk_ray.service.worlds import World


DRIVER_MEMORY = 256 * 2 ** 20


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and how to place trials on it."""

    address: str | None = None
    """Cluster address (`ray://...`, `host:port`, `auto`); else $RAY_ADDRESS, else a local cluster."""
    num_cpus: int | None = None
    """CPUs of an embedded cluster (setting it always starts a fresh embedded one)."""
    dashboard: bool = True
    """Start the Ray dashboard with an embedded cluster."""
    cpus_per_trial: float | None = None
    """CPUs Tune reserves per trial; None: the world's default (`for_world`)."""
    max_concurrent: int | None = None
    """Trials running at once; None: the world's default (`for_world`)."""

    def trial_resources(self) -> dict:
        """What Tune reserves per trial. A driver-only trial (0 CPUs) reserves 256 MiB of Ray's logical
        `memory` instead, because a Tune placement group may not be empty; any fraction of a CPU would
        leave a 2-CPU machine without room for a 2-worker Ray Train run."""
        if self.cpus_per_trial:
            return {"cpu": self.cpus_per_trial}
        return {"cpu": 0, "memory": DRIVER_MEMORY}

    def warm_trial_bundles(self) -> list[dict]:
        """A warm-worker trial's placement group (`World.warm_workers`): bundle 0 for the Tune actor that
        only waits (no CPU; Tune's bundles may not be empty), bundle 1 for the task that runs the world."""
        return [{"CPU": 0, "memory": DRIVER_MEMORY}, {"CPU": self.cpus_per_trial or 0, "memory": DRIVER_MEMORY}]

    def for_world(self, world: World) -> "RayOptions":
        """The world's defaults (`World.cpus_per_trial`, `World.max_concurrent`) where the user gave none."""
        return dataclasses.replace(
            self, cpus_per_trial=world.cpus_per_trial if self.cpus_per_trial is None else self.cpus_per_trial,
            max_concurrent=world.max_concurrent if self.max_concurrent is None else self.max_concurrent)


WARM_WORKERS = {"idle_worker_killing_time_threshold_ms": 60_000}
"""Ray system config of the cluster the sweep starts itself: an idle worker process lives 60 s (Ray's
default: 1 s once a node runs more worker processes than CPUs, which a Ray Train run always does with
its helper actors). A stage's sampling and scoring tasks and Ray Data's read tasks then run in a warm
process that has torch imported instead of starting one each (1.5–8 s of CPU apiece). `llm_ppo
--smoke` here: 178 → 140 s, 30 → 6 task processes started. The same setting on a `ray start` cluster:
RAY_idle_worker_killing_time_threshold_ms=60000 in each node's environment."""

LOCAL_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
"""Ray Train settings for the cluster the sweep starts itself, where the user's environment has none:
its controller polls the workers every 2 s by default, and a small run's stages on one machine are
mostly such waits (a poll is a local actor call). `llm_ppo --smoke` here: 145 → 120 s."""

PROBE_TIMEOUT_S = 5.0
"""How long a Ray address may take to answer before the sweep gives up on it (ray.init retries for minutes)."""


def check_reachable(address: str | None) -> None:
    """Fail fast, as bad input, on a cluster address nothing answers at: --address, else $RAY_ADDRESS; for
    `auto`, the cluster file that `ray start` left on this machine (when there is one)."""
    addr = address or os.environ.get("RAY_ADDRESS")
    if not addr or addr == "local":
        return
    target = addr
    if addr == "auto":
        target = cluster_left_behind()
        if target is None:
            return  # Ray's own `auto` search for a running cluster answers at once
    problem = unanswered(target)
    if problem:
        at = addr if target == addr else f"{addr} ({target}, left by `ray start`)"
        raise SpecError(f"cannot reach Ray at {at}: {problem}")


def unanswered(addr: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why no Ray cluster answers at `addr` (HOST:PORT or ray://HOST:PORT) within `timeout`; None if one does.

    Hand-written because Ray has no bounded probe: ray.init() on a dead address retries for minutes. A Ray
    GCS (and the Ray Client server behind ray://) is a gRPC server, and gRPC's readiness check (an HTTP/2
    handshake, no credentials needed) also tells a cluster from another program on the port, such as
    the dashboard's HTTP port given by mistake or a dead head's port taken over by something else.
    """
    host, _, port = addr.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return f"{addr!r} is not HOST:PORT, ray://HOST:PORT, auto or local"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        return e.strerror or str(e)
    import grpc  # a dependency of Ray's; imported here so that the CLI starts fast

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return (f"something listens there, but no Ray cluster answered within {timeout:g} s (a dashboard's "
                "http:// address is for `ray job submit`, not --address)")
    finally:
        channel.close()
    return None


def cluster_left_behind() -> str | None:
    """The address in the cluster file of this machine's last `ray start` ($RAY_TMPDIR/ray/ray_current_cluster,
    else /tmp/ray/...), which plain ray.init() follows; None when there is none. A head killed without
    `ray stop` leaves the file behind."""
    from ray._private.utils import read_ray_address  # where Ray itself reads it

    return read_ray_address() or None
