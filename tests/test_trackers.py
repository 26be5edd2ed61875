"""One smoke MoG sweep, seen in two tools a researcher has open:

* --tracker mlflow: one MLflow run per trial through Ray Tune's MLflowLoggerCallback, into the default
  local store (<storage>/<sweep>/mlflow.db, no server, no network); read back with MLflow's own client
  and checked against the Parquet rows the same sweep wrote;
* the Ray dashboard of its embedded cluster: the CLI names its address and the token command; headless
  Chromium logs in with that token and finds, in the sweep job's Task Table, the trials' tasks named by
  their grid points (the screenshot is docs/img/ray_dashboard_tasks.png when ADK_RAY_UPDATE_DOCS=1).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading

import pandas as pd
import pytest

from adk_ray.columns import METRICS
from tests.conftest import REPO

mlflow = pytest.importorskip("mlflow")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOT = REPO / "docs" / "img" / "ray_dashboard_tasks.png"


def _dashboard_shows_trials(url: str, env: dict, shot) -> list[str]:
    """Log in to the Ray dashboard with the token `ray get-auth-token` prints, open the sweep's job, its Task
    Table filtered to the tasks that run trials, wait for tasks named by their grid points, screenshot it;
    the names seen. (MoG trials run as tasks named after them on reused workers: World.warm_workers.)"""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    token = subprocess.run(["ray", "get-auth-token"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(f)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=opts)
    wait = WebDriverWait(driver, 60, poll_frequency=1, ignored_exceptions=(TimeoutException,))
    try:
        driver.get(url + "/#/jobs")
        box = wait.until(lambda d: d.find_elements(By.XPATH, "//input[@placeholder='Enter your authentication token']"))[0]
        box.send_keys(token)
        driver.find_element(By.XPATH, "//button[normalize-space()='Submit' or normalize-space()='SUBMIT']").click()
        # The sweep's driver is the cluster's first job.
        wait.until(lambda d: d.find_elements(By.XPATH, "//a[normalize-space()='01000000']"))[0].click()
        wait.until(lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='Task Table']"))[0].click()
        label = wait.until(lambda d: d.find_elements(By.XPATH, "//label[normalize-space()='Function or Class Name']"))[0]
        driver.find_element(By.ID, label.get_attribute("for")).send_keys("_run_task")

        def trials_shown(d):
            return re.findall(r"beta=[0-9.]+,iterations=[0-9/]+", d.page_source)

        WebDriverWait(driver, 90, poll_frequency=1, ignored_exceptions=(TimeoutException,)).until(trials_shown)
        table = driver.find_element(By.XPATH, "//*[normalize-space(text())='Task Table']")
        driver.execute_script("arguments[0].scrollIntoView()", table)
        driver.save_screenshot(str(shot))
        return re.findall(r"beta=[0-9.]+,iterations=[0-9/]+", driver.page_source)
    finally:
        driver.quit()


def test_mlflow_runs_and_the_ray_dashboard(ray_env, tmp_path):
    # The embedded cluster with its dashboard (no --no-dashboard); 1500 iterations keep trials up long
    # enough (about 10 s each on a quiet machine) for the browser to log in and see them running.
    cmd = [sys.executable, "-m", "adk_ray.sweep", "mog_ppo", "--smoke", "--set", "iterations=1500", "--storage",
           str(tmp_path), "--tracker", "mlflow", "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ray_env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    dashboard = None
    try:
        for line in proc.stderr:
            lines.append(line)
            m = re.match(r"Ray dashboard: (http://\S+)(.*)", line)
            if m:
                dashboard = m
                break
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # keep draining
        assert dashboard, "".join(lines)[-3000:]
        assert dashboard.group(2).strip() == "(token: `ray get-auth-token`)"  # Ray 2.60 local: token auth
        if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
            seen = _dashboard_shows_trials(dashboard.group(1), ray_env, tmp_path / "ray_dashboard.png")
            assert set(seen) <= {"beta=0.05,iterations=1500", "beta=0.1,iterations=1500", "beta=1.0,iterations=1500"}
            if os.environ.get("ADK_RAY_UPDATE_DOCS") == "1":
                shutil.copy(tmp_path / "ray_dashboard.png", SHOT)
        assert proc.wait(timeout=300) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
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
