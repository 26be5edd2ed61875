"""Keeps `<results>/dashboard.html` current during a sweep without letting it slow the sweep down.

The dashboard is a convenience: a failure to draw it is a warning, never a failed sweep.
"""
from __future__ import annotations

import sys
import time

MIN_INTERVAL_S = 10.0


class DashboardRefresher:
    def __init__(self, location: str, min_interval: float = MIN_INTERVAL_S, plotly_js: str = "inline"):
        self.location = location
        """Results directory (path or URI) handed to write_dashboard."""
        self.plotly_js = plotly_js
        """write_dashboard's `plotly_js`: "inline" (one self-contained file) or "shared"."""
        self.min_interval = min_interval
        self.last = -float("inf")
        self.dirty = False
        self.warned: set[str] = set()

    def mark(self) -> None:
        """New rows exist; refresh now if the last refresh is old enough, else at a later `tick`."""
        self.dirty = True
        self.tick()

    def tick(self) -> None:
        if self.dirty and time.monotonic() - self.last >= self.min_interval:
            self.refresh()

    def refresh(self) -> None:
        self.dirty, self.last = False, time.monotonic()
        try:
            from adk_ray.dashboards import write_dashboard
            write_dashboard(self.location, plotly_js=self.plotly_js)
        except Exception as e:  # noqa: BLE001 - see module docstring
            message = f"{type(e).__name__}: {e}".splitlines()[0]
            if message not in self.warned:  # once per distinct problem, not once per trial
                self.warned.add(message)
                print(f"warning: dashboard not refreshed ({message})", file=sys.stderr)
