"""The sweeps' Tune callback: one tqdm bar of finished/total trials over every sweep of the command, error
rows for trials that died outside the world (a killed worker, an OOM), and dashboard refreshes."""
from __future__ import annotations

import sys
import threading
from typing import Callable

from ray import tune
from tqdm import tqdm

from adk_ray.service.dashboard import DashboardRefresher


_LOCK = threading.RLock()
"""Held by every SweepProgress callback (a module global: Tune pickles its callbacks, and a lock cannot be)."""


class SweepProgress(tune.Callback):
    def __init__(self, desc: str, total: int, done: int, failed: int, dashboards: dict[str, DashboardRefresher],
                 on_crash: Callable[[str, dict, str], None]):
        """`done`/`failed` count trials finished by an earlier run; `dashboards` maps each sweep's name to
        its page; `on_crash(sweep, trial_config, message)` records a trial whose process failed before it
        could write its own rows. A grid trial names its sweep in its point (`config['trial']['sweep']`);
        a search's trials carry only the searched fields, so a search's Tuner gets `for_search(sweep)`.
        The bar lives across Tuners until `close`; Tuners that run at once (runner.run_tuners) call it
        from their own threads, so every callback holds `_LOCK`."""
        self.desc, self.total, self.dashboards, self.on_crash = desc, total, dashboards, on_crash
        self.ok, self.failed = done - failed, failed
        self.bar = None

    def for_search(self, sweep: str) -> "tune.Callback":
        """The callback for the Tuner of search `sweep`: this bar, its trials counted for that sweep."""
        return _SearchView(self, sweep)

    def setup(self, **info):
        with _LOCK:
            self._setup()

    def _setup(self):
        if self.bar is None:  # one bar for every Tuner of the command
            self.bar = tqdm(total=self.total, initial=self.ok + self.failed, desc=self.desc, unit="trial",
                            file=sys.stderr, dynamic_ncols=True)
            self._postfix()

    def on_step(self, iteration, trials, **info):
        with _LOCK:
            for dashboard in self.dashboards.values():
                dashboard.tick()

    def on_trial_complete(self, iteration, trials, trial, sweep: str | None = None, **info):
        with _LOCK:
            if (trial.last_result or {}).get("status") == "error":
                self.failed += 1
            else:
                self.ok += 1
            self._advance(sweep or self.sweep_of(trial))

    def on_trial_recover(self, iteration, trials, trial, sweep: str | None = None, **info):
        """Tune restarts a trial whose process died (runner.TRIAL_RETRIES); said in one line."""
        error = str(trial.get_error() or "its process died").strip().splitlines() or ["its process died"]
        with _LOCK:
            tqdm.write(f"{sweep or self.sweep_of(trial)}: trial {trial} lost its process ({error[-1][:200]}); "
                       "restarting it", file=sys.stderr)

    def on_trial_error(self, iteration, trials, trial, sweep: str | None = None, **info):
        error = trial.get_error()
        lines = [ln for ln in str(error or "trial failed").strip().splitlines() if ln.strip()]
        sweep = sweep or self.sweep_of(trial)
        with _LOCK:
            self.on_crash(sweep, trial.config, f"Tune trial failed: {lines[-1] if lines else 'unknown error'}")
            self.failed += 1
            self._advance(sweep)

    def close(self):
        if self.bar is not None:
            self.bar.close()

    @staticmethod
    def sweep_of(trial) -> str:
        """A grid trial's sweep, from its point."""
        return trial.config["trial"]["sweep"]

    def _advance(self, sweep: str):
        if self.bar is not None:
            self._postfix(refresh=False)
            self.bar.update(1)
        self.dashboards[sweep].mark()

    def _postfix(self, refresh: bool = True):
        self.bar.set_postfix_str(f"done={self.ok} failed={self.failed}", refresh=refresh)


class _SearchView(tune.Callback):
    """SweepProgress as seen by one search's Tuner: its trials belong to that search's sweep."""

    def __init__(self, progress: SweepProgress, sweep: str):
        self.progress, self.sweep = progress, sweep

    def setup(self, **info):
        self.progress.setup(**info)

    def on_step(self, iteration, trials, **info):
        self.progress.on_step(iteration, trials, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.progress.on_trial_complete(iteration, trials, trial, sweep=self.sweep)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.progress.on_trial_recover(iteration, trials, trial, sweep=self.sweep)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.on_trial_error(iteration, trials, trial, sweep=self.sweep)


def point_name(point: dict) -> str:
    """A grid trial's readable name, its grid point: `beta=0.5,iterations=300` (the full config and the
    trial id and the sweep's name, which ride along in the point, are left out; tuples print as `15/30`)."""
    def text(v) -> str:
        return "/".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    shown = {k: v for k, v in point.items() if k not in ("trial_id", "config", "sweep")}
    return ",".join(f"{k}={text(v)}" for k, v in shown.items()) or point.get("trial_id", "trial")


def named_trainable(trainable, name: str | None = None):
    """The trainable as Tune's function-trainable class, with the trial's name (or `name`) as the actor's
    repr: Ray shows an actor's `__repr__` in the dashboard's actor list and as its log prefix, where Tune's
    own class would show only the function's name for every trial. Ray reads the repr once, when the actor
    starts, so an actor Tune reuses for later trials takes `name` (their tasks carry the trials' names)."""
    from ray.tune.trainable import wrap_function

    base = wrap_function(trainable)

    class Trial(base):
        def __repr__(self):
            return name or self.trial_name or super().__repr__()

    Trial.__name__ = Trial.__qualname__ = base._name
    return Trial


def dashboard_line() -> str | None:
    """`Ray dashboard: http://HOST:PORT` and, when the cluster uses token authentication (Ray's default
    for local clusters), the command that prints the token its login dialog asks for; None without one."""
    import ray
    from ray._private.worker import get_dashboard_url  # what ray.init()'s context reports, also when attached

    url = get_dashboard_url()
    if not url:
        return None
    url = url if "://" in url else f"http://{url}"
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
        token = is_token_auth_enabled()
    except ImportError:  # a Ray without token authentication
        token = False
    del ray
    return f"Ray dashboard: {url}" + (" (token: `ray get-auth-token`)" if token else "")
