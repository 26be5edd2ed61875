"""End to end on an embedded Ray: the smoke sweep, kill-and-resume, a failing trial, an Optuna search."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from adk_ray.service.plan import plan_trials
from adk_ray.service.overrides import apply_sets
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import load_spec

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def read_rows(results: Path):
    return ds.dataset(str(results / "data")).to_table().to_pandas()


def test_smoke_sweep_writes_the_expected_rows(smoke_results, expect_complete):
    trials = plan_trials(shrink(load_spec("mog_ppo")))
    expect_complete(smoke_results, trials)
    rows = read_rows(smoke_results)
    assert (rows.status == "ok").all() and rows.error.isna().all()
    assert set(rows.stage) == {"p_prime", "p_dprime", "aligned", "final", "curve"}
    assert rows.final_average_reward.notna().all() and (rows.wall_seconds > 0).all()
    assert rows.seed.dtype == "int64" and rows.beta.dtype == "float64" and rows.sweep.eq("mog_ppo").all()
    cfg = json.loads(rows.config_json.iloc[0])
    assert cfg["sft_iterations"] == 60 and cfg["seeds"] == [0, 1]
    for t in trials:
        assert (smoke_results / "models" / f"{t.trial_id}.parquet").exists()
    desc = json.loads((smoke_results / "sweep.json").read_text())
    assert desc["smoke"] is True and desc["trial_count"] == 3 and desc["group_by"] == ["beta", "iterations"]
    assert desc["grid"] == [{"beta": [0.05, 0.1], "iterations": [30]}, {"beta": [1.0], "iterations": [15, 30]}]
    assert [t["trial_id"] for t in desc["trials"]] == [t.trial_id for t in trials]


def test_kill_mid_sweep_then_resume(ray_env, run_sweep, expect_complete, tmp_path):
    storage = tmp_path / "results"
    args = ["mog_ppo", "--smoke", "--set", "beta=0.05,0.1,0.3", "--max-concurrent", "1", "--storage", str(storage)]
    trials = plan_trials(apply_sets(shrink(load_spec("mog_ppo")), ["beta=0.05,0.1,0.3"]))
    assert len(trials) == 3
    data = storage / "mog_ppo" / "data"
    log = tmp_path / "driver.log"
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would stall the driver
        proc = subprocess.Popen([sys.executable, "-m", "adk_ray.sweep", *args, "--num-cpus", "2", "--no-dashboard"],
                                cwd=REPO, env=ray_env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (data.exists() and any(data.glob("*.parquet"))):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as a crash would
        proc.wait(timeout=30)
    finally:
        time.sleep(2)
        try:  # reap what the dead driver started (Ray normally follows it down by itself)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    survivors = {p.name: p.stat().st_mtime_ns for p in data.glob("*.parquet")}
    assert 1 <= len(survivors) < 3, "the sweep finished before it could be killed"

    resumed = run_sweep(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(survivors)} already finished, {3 - len(survivors)} to run" in resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in data.glob("*.parquet") if p.name in survivors} == survivors
    expect_complete(storage / "mog_ppo", trials)


def test_a_failing_trial_gives_error_rows_and_exit_1(run_sweep, tmp_path):
    sweep = tmp_path / "explode.yaml"
    sweep.write_text(textwrap.dedent("""\
        # Hypothesis: an absurd learning rate makes the world raise, and the sweep carries on
        world: mog
        fixed: {algorithm: ppo}
        grid:
          - {lr: [0.01, 1e30]}
        seeds: 2
        """))
    storage = tmp_path / "results"
    proc = run_sweep(str(sweep), "--smoke", "--storage", str(storage))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 ok, 1 failed" in proc.stderr
    rows = read_rows(storage / "explode")
    bad, good = rows[rows.lr == 1e30], rows[rows.lr == 0.01]
    assert len(bad) == 2 * 2 * 1 and (bad.stage == "final").all() and (bad.status == "error").all()
    assert bad.error.str.contains("non-finite").all() and bad.final_average_reward.isna().all()
    assert (good.status == "ok").all() and len(good[good.stage == "final"]) == 2 * 2 * 1


def test_optuna_search_smoke_and_resume(run_sweep, tmp_path):
    storage = tmp_path / "results"
    proc = run_sweep("mog_kd_beta_search", "--smoke", "--storage", str(storage))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = storage / "mog_kd_beta_search"
    rows = read_rows(results)
    assert rows.trial_id.nunique() == 2 and (rows.status == "ok").all()
    assert rows.groupby("trial_id").kd_beta.nunique().eq(1).all() and rows.kd_beta.between(1.0, 10.0).all()
    desc = json.loads((results / "sweep.json").read_text())
    assert desc["search"]["constraint"] == "overall_recall >= -3.0"
    assert sorted(t["trial_id"] for t in desc["trials"]) == sorted(rows.trial_id.unique())
    again = run_sweep("mog_kd_beta_search", "--smoke", "--storage", str(storage))  # nothing left to do
    assert again.returncode == 0 and "2 already finished, 0 to run" in again.stderr
