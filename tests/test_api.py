"""adk_ray.run_sweep / load_results / SweepError: the CLI's checks and resume, from Python."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

import adk_ray
from adk_ray.api import overrides_to_sets
from adk_ray.service.cli import main
from tests.conftest import REPO


def test_import_is_light_and_exports_the_api():
    code = ("import sys, adk_ray; assert adk_ray.run_sweep and adk_ray.load_results and adk_ray.SweepError; "
            "heavy = [m for m in ('ray', 'torch') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("kwargs, cli, message", [
    ({"name_or_path": "no_such_sweep"}, ["no_such_sweep"], "no_such_sweep"),
    ({"name_or_path": "mog_ppo", "overrides": {"bogus": 1}}, ["mog_ppo", "--set", "bogus=1"], "unknown key 'bogus'"),
    ({"name_or_path": "mog_ppo", "overrides": {"beta": [-1, 2]}}, ["mog_ppo", "--set", "beta=-1,2"], "beta"),
])
def test_bad_input_is_one_sweep_error_with_the_cli_line(kwargs, cli, message, tmp_path, capsys):
    with pytest.raises(adk_ray.SweepError, match=message) as err:
        adk_ray.run_sweep(storage=str(tmp_path), **kwargs)
    assert "\n" not in str(err.value)
    assert main([*cli, "--storage", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"python -m adk_ray.sweep: error: {err.value}\n"
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_overrides_become_the_cli_sets():
    assert overrides_to_sets({"beta": [1.0, 2.0], "seeds": 8, "grpo_std_normalize": False}) == (
        "beta=1.0,2.0", "seeds=8", "grpo_std_normalize=false")
    assert overrides_to_sets(["lr=0.01"]) == ("lr=0.01",)


def test_load_results_of_nothing_is_a_sweep_error(tmp_path):
    with pytest.raises(adk_ray.SweepError, match="no sweep results"):
        adk_ray.load_results(str(tmp_path / "nothing"))


def test_a_finished_sweep_resumes_to_its_rows_without_ray(smoke_results, monkeypatch):
    """run_sweep on a finished sweep reads every trial back (the CLI's resume: nothing left to run, so no
    Ray at all), and load_results gives the same rows as the Parquet dataset."""
    monkeypatch.setenv("ADK_RAY_STORAGE", str(smoke_results.parent))
    df = adk_ray.run_sweep("mog_ppo", smoke=True)
    assert df.attrs["exit_code"] == 0
    # Whether Ray got imported is asked of a fresh interpreter: other tests of this process import it.
    probe = ("import sys, adk_ray; df = adk_ray.run_sweep('mog_ppo', smoke=True); "
             "print(df.attrs['exit_code'], len(df), 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ADK_RAY_STORAGE": str(smoke_results.parent)})
    assert out.stdout.split() == ["0", str(len(df)), "False"], out.stderr[-2000:]
    plain = pd.read_parquet(smoke_results / "data")
    key = ["trial_id", "pipeline", "stage", "seed", "iterations", "step"]
    pd.testing.assert_frame_equal(df.sort_values(key).reset_index(drop=True)[plain.columns],
                                  plain.sort_values(key).reset_index(drop=True), check_dtype=False)
    again = adk_ray.load_results(str(smoke_results))
    assert again.shape == df.shape and again.attrs["sweep"]["name"] == "mog_ppo"
