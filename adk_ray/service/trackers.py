"""`--tracker mlflow|wandb|tensorboard`: experiment trackers through Ray Tune's own logger callbacks.

Each trial reports to Tune, after its world has run (trainable.py):
  * one result per learning-curve step (`curve` rows of the MoG world, `selection_curve` rows of the LLM
    world): `curve/<pipeline>/<metric>` (median over seeds; per-seed curves stay in the Parquet rows: a metric per seed
    would multiply the tracker's writes), with
    `timesteps_total` = the alignment step, which MLflow and TensorBoard use as the metric's step;
  * then its summary: `<pipeline>/<stage>/<metric>`, the median over seeds of every stored model (p_prime,
    p_dprime, aligned, final) at the trial's longest iteration count, and `<pipeline>/<stage>/it<N>/<metric>`
    for each shorter one.
The callbacks log the trial's config (the grid point and the full trial config) as parameters and
every reported number as a metric; the Parquet rows stay the record, trackers are a view.

Where they write, with no network: MLflow to --tracking-uri, else $MLFLOW_TRACKING_URI, else a local
SQLite store `<storage>/<sweep>/mlflow.db` (object storage: MLflow's own default); W&B in offline mode (unless
$WANDB_MODE says otherwise) under `<storage>/<sweep>/wandb/` (`wandb sync` uploads it later);
TensorBoard event files copied to `<storage>/<sweep>/tensorboard/<trial>/`.
Only this module's `callbacks` imports Ray and the tracker packages.
"""
from __future__ import annotations

import importlib.util
import os
import posixpath
import time
from dataclasses import dataclass

import pyarrow as pa

from adk_ray.columns import METRICS
from adk_ray.service.values import SpecError

TRACKERS = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}
"""--tracker name -> the package it needs (all in the `trackers` extra)."""
CURVE_STAGES = ("curve", "selection_curve")
"""Stages whose rows are learning-curve points (a `step` each) rather than stored models."""


@dataclass(frozen=True)
class Trackers:
    """The trackers a sweep logs to."""

    names: tuple[str, ...]
    """Each of TRACKERS' keys at most once, in the order given."""
    tracking_uri: str | None = None
    """MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else a file store under the sweep's results."""

    def check(self) -> None:
        """SpecError (one line) for an unknown tracker or one whose package is not installed."""
        for name in self.names:
            if name not in TRACKERS:
                raise SpecError(f"--tracker {name!r} is not one of {', '.join(TRACKERS)}")
            if importlib.util.find_spec(TRACKERS[name]) is None:
                raise SpecError(f"--tracker {name} needs the {TRACKERS[name]} package: pip install -e '.[trackers]'")

    def mlflow_uri(self, location: str) -> str | None:
        if self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
            return self.tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
        # A SQLite file, MLflow's own local store (3.x refuses its old ./mlruns file store by default).
        return None if "://" in location else "sqlite:///" + posixpath.join(location, "mlflow.db")

    def callbacks(self, location: str, sweep: str) -> list:
        """Ray Tune callbacks logging to every chosen tracker (location: the sweep's results directory)."""
        out = []
        for name in dict.fromkeys(self.names):
            if name == "mlflow":
                out.append(_mlflow_callback(self.mlflow_uri(location), sweep))
            elif name == "wandb":
                from ray.air.integrations.wandb import WandbLoggerCallback
                # Offline unless the user asked otherwise: no network, no API key (wandb sync uploads later).
                os.environ.setdefault("WANDB_MODE", "offline")
                kw = {"dir": location} if "://" not in location else {}
                out.append(WandbLoggerCallback(project=sweep, group=sweep, mode=os.environ["WANDB_MODE"], **kw))
            elif name == "tensorboard":
                out.append(_tensorboard_callback(location))
        return out


def _mlflow_callback(tracking_uri: str | None, sweep: str):
    """Tune's MLflowLoggerCallback, writing each result in one `log_batch` call. Tune's own callback logs
    every metric and parameter with a call of its own, one SQLite transaction each, in the driver's loop:
    a smoke sweep's ~30 curve points of ~25 metrics took 80 s of a 105 s sweep that way."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION
    from ray.tune.utils import flatten_dict

    def chunks(items: list, size: int):
        return (items[i:i + size] for i in range(0, len(items), size))

    class BatchedMLflowLoggerCallback(MLflowLoggerCallback):
        def log_trial_start(self, trial):
            if trial not in self._trial_runs:
                run = self.mlflow_util.start_run(tags={**self.tags, "trial_name": str(trial)}, run_name=str(trial))
                self._trial_runs[trial] = run.info.run_id
            params = [Param(k, str(v)) for k, v in flatten_dict(trial.config).items()]
            client = self.mlflow_util._get_client()
            for part in chunks(params, MAX_PARAMS_TAGS_PER_BATCH):
                client.log_batch(self._trial_runs[trial], params=part)

        def log_trial_result(self, iteration, trial, result):
            step = result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in self.mlflow_util._parse_dict(flatten_dict(result)).items()]
            client = self.mlflow_util._get_client()
            for part in chunks(metrics, MAX_METRICS_PER_BATCH):
                client.log_batch(self._trial_runs[trial], metrics=part)

    return BatchedMLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=sweep, tags={"sweep": sweep})


def _tensorboard_callback(location: str):
    """Tune's TBXLoggerCallback writes into each trial's directory, which lives in the sweep's throwaway
    Tune dir (runner.py); so copy the event files next to the results when a trial ends."""
    from ray.tune.logger import TBXLoggerCallback

    from adk_ray.storage import open_storage

    class TensorBoardToResults(TBXLoggerCallback):
        def log_trial_end(self, trial, failed: bool = False):
            super().log_trial_end(trial, failed)  # closes (flushes) the trial's writer
            fs, root = open_storage(location)
            dest = posixpath.join(root, "tensorboard", str(trial).replace("/", "_"))  # the grid point
            fs.create_dir(dest, recursive=True)
            for f in os.listdir(trial.local_path):
                if f.startswith("events.out.tfevents"):
                    with open(os.path.join(trial.local_path, f), "rb") as src, \
                            fs.open_output_stream(posixpath.join(dest, f)) as out:
                        out.write(src.read())

    return TensorBoardToResults()


def metric_columns(world) -> list[str]:
    """The metrics a tracker sees: the four of the paper and the world's floating-point extra columns
    (the LLM world's reward_std, margin, accuracy, kl, loss)."""
    return list(METRICS) + [n for n, t in world.extra_columns if pa.types.is_floating(t)]


def _frame(table: pa.Table):
    df = table.to_pandas()
    return df[df["status"] == "ok"] if "status" in df else df


def curve_results(table: pa.Table, metrics: list[str]) -> list[dict]:
    """One flat dict per learning-curve step, in step order (see the module docstring)."""
    df = _frame(table)
    df = df[df["stage"].isin(CURVE_STAGES) & df["step"].notna()]
    out = []
    for step, at in df.groupby("step", sort=True):
        r: dict = {"timesteps_total": int(step), "step": int(step)}
        for (stage, pipe), g in at.groupby(["stage", "pipeline"]):
            prefix = "curve" if stage == "curve" else stage
            for m in metrics:
                if g[m].notna().any():
                    r[f"{prefix}/{pipe}/{m}"] = float(g[m].median())
        out.append(r)
    return out


def final_metrics(table: pa.Table, metrics: list[str]) -> dict:
    """`<pipeline>/<stage>/<metric>` medians over seeds of every stored model (see the module docstring)."""
    df = _frame(table)
    df = df[~df["stage"].isin(CURVE_STAGES)]
    out: dict = {}
    if df.empty:
        return out
    longest = df["iterations"].max() if df["iterations"].notna().any() else None
    for (pipe, stage), g in df.groupby(["pipeline", "stage"]):
        for its, gi in g.groupby(g["iterations"].fillna(-1)):
            tag = "" if its == -1 or its == longest or gi["iterations"].isna().all() else f"it{int(its)}/"
            for m in metrics:
                if gi[m].notna().any():
                    out[f"{pipe}/{stage}/{tag}{m}"] = float(gi[m].median())
    return out
