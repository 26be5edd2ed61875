"""The sweep's Tune callback: a tqdm bar of finished/total trials, error rows for trials that died
outside the world (a killed worker, an OOM), and dashboard refreshes."""
from __future__ import annotations

import sys
from typing import Callable

from ray import tune
from tqdm import tqdm

from adk_ray.service.dashboard import DashboardRefresher


class SweepProgress(tune.Callback):
    def __init__(self, name: str, total: int, done: int, failed: int, dashboard: DashboardRefresher,
                 on_crash: Callable[[dict, str], None]):
        """`done`/`failed` count trials finished by an earlier run; `on_crash(trial_config, message)`
        records a trial whose process failed before it could write its own rows."""
        self.name, self.total, self.dashboard, self.on_crash = name, total, dashboard, on_crash
        self.ok, self.failed = done - failed, failed
        self.bar = None

    def setup(self, **info):
        self.bar = tqdm(total=self.total, initial=self.ok + self.failed, desc=self.name, unit="trial",
                        file=sys.stderr, dynamic_ncols=True)
        self._postfix()

    def on_step(self, iteration, trials, **info):
        self.dashboard.tick()

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get("status") == "error":
            self.failed += 1
        else:
            self.ok += 1
        self._advance()

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Tune restarts a trial whose process died (runner.TRIAL_RETRIES); said in one line."""
        error = str(trial.get_error() or "its process died").strip().splitlines() or ["its process died"]
        tqdm.write(f"{self.name}: trial {trial} lost its process ({error[-1][:200]}); restarting it", file=sys.stderr)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error()
        lines = [ln for ln in str(error or "trial failed").strip().splitlines() if ln.strip()]
        self.on_crash(trial.config, f"Tune trial failed: {lines[-1] if lines else 'unknown error'}")
        self.failed += 1
        self._advance()

    def on_experiment_end(self, trials, **info):
        if self.bar is not None:
            self.bar.close()

    def _advance(self):
        if self.bar is not None:
            self._postfix(refresh=False)
            self.bar.update(1)
        self.dashboard.mark()

    def _postfix(self, refresh: bool = True):
        self.bar.set_postfix_str(f"done={self.ok} failed={self.failed}", refresh=refresh)
