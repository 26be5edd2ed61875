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

    def for_world(self, world: World) -> "RayOptions":
        """The world's defaults (`World.cpus_per_trial`, `World.max_concurrent`) where the user gave none."""
        return dataclasses.replace(
            self, cpus_per_trial=world.cpus_per_trial if self.cpus_per_trial is None else self.cpus_per_trial,
            max_concurrent=world.max_concurrent if self.max_concurrent is None else self.max_concurrent)


def check_reachable(address: str | None) -> None:
    """Fail fast, as bad input, on a cluster address nothing answers at (Ray itself retries for minutes)."""
    addr = address or os.environ.get("RAY_ADDRESS")
    if not addr or addr in ("auto", "local"):
        return
    host, _, port = addr.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(f"Ray address {addr!r} is not HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise SpecError(f"cannot reach Ray at {addr}: {e.strerror or e}") from None
