"""How the sweep reaches Ray and places trials on it (kept free of Ray imports for the CLI)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from adk_ray.service.values import SpecError


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and how to place trials on it."""

    address: str | None = None
    """Cluster address (`ray://...`, `host:port`, `auto`); else $RAY_ADDRESS, else a local cluster."""
    num_cpus: int | None = None
    """CPUs of an embedded cluster (setting it always starts a fresh embedded one)."""
    dashboard: bool = True
    """Start the Ray dashboard with an embedded cluster."""
    cpus_per_trial: float = 1.0
    """CPUs Tune reserves per trial (the MoG world is single-threaded)."""
    max_concurrent: int | None = None
    """Trials running at once; None lets the CPUs decide."""


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
