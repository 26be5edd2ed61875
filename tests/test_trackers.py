"""--tracker mlflow: a smoke MoG sweep logs one MLflow run per trial through Ray Tune's MLflowLoggerCallback,
into the default local store (<storage>/<sweep>/mlflow.db, no server, no network); read back with MLflow's
own client and checked against the Parquet rows the same sweep wrote."""
from __future__ import annotations

import pandas as pd
import pytest

from adk_ray.columns import METRICS

mlflow = pytest.importorskip("mlflow")


def test_mlflow_runs_hold_config_final_metrics_and_curves(run_sweep, tmp_path):
    proc = run_sweep("mog_ppo", "--smoke", "--storage", str(tmp_path), "--tracker", "mlflow")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = tmp_path / "mog_ppo"
    rows = pd.read_parquet(results / "data")

    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mog_ppo")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == rows.trial_id.nunique() == 3
    by_trial = {r.data.params["trial/trial_id"]: r for r in runs}
    assert set(by_trial) == set(rows.trial_id)
    for tid, run in by_trial.items():
        mine = rows[rows.trial_id == tid]
        # the config: the grid point (also the run's name) and every field of the trial config
        assert float(run.data.params["trial/config/beta"]) == mine.beta.iloc[0]
        assert run.data.params["trial/config/algorithm"] == "ppo"
        assert run.info.run_name.startswith(f"beta={mine.beta.iloc[0]}")
        # final metrics of every model of both pipelines: the median over seeds of the stored rows
        longest = mine.iterations.max()
        models = mine[mine.stage != "curve"]
        assert set(zip(models.pipeline, models.stage)) == {("K-A", "p_prime"), ("K-A", "p_dprime"), ("K-A", "final"),
                                                          ("A-K", "p_prime"), ("A-K", "aligned"), ("A-K", "final")}
        for (pipe, stage), at in models.groupby(["pipeline", "stage"]):
            at = at[at.iterations == longest] if at.iterations.notna().any() else at
            for m in METRICS:
                assert run.data.metrics[f"{pipe}/{stage}/{m}"] == pytest.approx(at[m].median(), rel=1e-6)
        # the learning curve as step metrics, one point per evaluation step
        curve = mine[(mine.stage == "curve") & (mine.pipeline == "A-K")]
        hist = client.get_metric_history(run.info.run_id, "curve/A-K/final_average_reward")
        assert len(hist) == curve.step.nunique() >= 3
        last = curve[curve.step == curve.step.max()].final_average_reward.median()
        assert max(hist, key=lambda m: m.step).value == pytest.approx(last, rel=1e-6)
