"""Dashboards: rendering a synthetic results store to HTML (no browser, no Ray)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from adk_ray.dashboards import render_html, write_dashboard
from adk_ray.dashboards.load import load_results
from adk_ray.dashboards.synthetic import write_synthetic_results


def plot_divs(html: str) -> int:
    return len(re.findall(r'class="plotly-graph-div"', html))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return str(write_synthetic_results(str(tmp_path_factory.mktemp("synthetic")), seeds=6))


def test_render_draws_every_expected_figure(synthetic, tmp_path):
    out = write_dashboard(synthetic, str(tmp_path / "d.html"))
    html = open(out, encoding="utf-8").read()
    assert "Could not draw" not in html
    # 2 boxplot sections (β, iterations) + learning curves + density + reward histogram
    assert plot_divs(html) == 5
    assert html.count("<h2>Sweep over") == 2
    assert "Sweep over β (iterations = 300)" in html and "Sweep over iterations (β = 1)" in html
    # plotly.js inline exactly once, no CDN
    assert html.count("plotly.js v") == 1 and not re.search(r"<script[^>]*\bsrc=", html)
    # counts: 10 trials done, the iterations=3000 one failed, 1 more planned
    assert re.search(r"id='count-done'><b>10</b>", html)
    assert re.search(r"id='count-failed'><b>1</b>", html)
    assert re.search(r"id='count-running'><b>1</b>", html)
    # the failed trial's error text, escaped
    assert "FloatingPointError: NaN in PPO loss" in html
    assert "&lt;b&gt;not html&lt;/b&gt;" in html and "<b>not html</b>" not in html
    # the comparison table: medians and the bootstrap CI of their difference, per β
    assert html.count("<table class='medians'>") == 2
    assert "Δ A-K − K-A [95% CI]" in html


def test_boxplot_traces_carry_precomputed_quartiles(synthetic):
    html = render_html(load_results(synthetic))
    fig = _figure_json(html, 1)
    boxes = [t for t in fig["data"] if t["type"] == "box"]
    assert len(boxes) == 8  # 4 metric panels × K-A, A-K
    assert {b["name"] for b in boxes} == {"K-A", "A-K"}
    colours = {b["name"]: b["marker"]["color"] for b in boxes}
    assert colours == {"K-A": "#d62728", "A-K": "#1f77b4"}
    b = boxes[0]
    assert b["x"] == ["0.05", "0.1", "0.3", "0.5", "1", "2"]
    assert len(b["q1"]) == len(b["median"]) == 6 and len(b["y"][0]) == 6  # six seeds per box
    assert "median" in b["customdata"][0][0] and "IQR" in b["customdata"][0][0]


def _figure_json(html: str, n: int) -> dict:
    """The (data, layout) plotly.newPlot receives for div fig-n."""
    m = re.search(r'Plotly\.newPlot\(\s*"fig-%d",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"' % n, html, re.S)
    assert m, f"fig-{n} not found"
    return {"data": json.loads(m.group(1)), "layout": json.loads(m.group(2))}


def test_missing_files_still_render_with_a_notice(tmp_path):
    html = open(write_dashboard(str(tmp_path)), encoding="utf-8").read()
    assert (tmp_path / "dashboard.html").exists()
    assert "No data/ directory yet" in html and "No sweep.json" in html
    assert "No finished trials yet" in html
    assert plot_divs(html) == 0


def test_partial_store_renders_what_is_there(tmp_path):
    root = str(write_synthetic_results(str(tmp_path), seeds=3, with_models=False, with_sweep_json=False))
    # a half-uploaded file and a writer's temporary must not break the page
    (tmp_path / "data" / "broken.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "data" / ".x.parquet.abcd.tmp").write_bytes(b"partial")
    html = render_html(load_results(root))
    assert "Skipped unreadable file broken.parquet" in html
    assert "No models/ directory yet" in html and "No sweep.json" in html
    # sections inferred from the varying columns (β, iterations), plus the learning curves
    assert plot_divs(html) == 3
    assert re.search(r"id='count-running'><b>\?</b>", html)


def test_llm_world_draws_trajectory_and_selection_curves(tmp_path):
    root = str(write_synthetic_results(str(tmp_path), seeds=3, world="llm", with_models=False))
    html = render_html(load_results(root))
    assert "Trajectories (Figure 5)" in html and "Model selection" in html
    assert plot_divs(html) == 2 + 1 + 1 + 1
    sel = _figure_json(html, 5)
    titles = [a["text"] for a in sel["layout"]["annotations"]]
    assert "<b>Final Average Reward</b>" in titles and "<b>reward_std</b>" in titles
    traj = _figure_json(html, 4)
    assert {t["name"] for t in traj["data"]} == {"K-A", "A-K"}
    assert traj["data"][0]["text"] in (["p′", "p″", "p″_KA"], ["p′", "p′_AK", "p″_AK"])


def test_write_is_atomic_and_leaves_no_temporaries(synthetic, tmp_path):
    out = tmp_path / "sub" / "page.html"
    out.parent.mkdir()
    out.write_text("old page")
    assert write_dashboard(synthetic, str(out)) == str(out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert os.listdir(out.parent) == ["page.html"]
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_cli_and_no_ray_import(synthetic, tmp_path):
    out = tmp_path / "cli.html"
    proc = subprocess.run([sys.executable, "-m", "adk_ray.dashboard", synthetic, "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stderr
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    # the dashboards layer reads the store only: neither Ray nor torch comes along
    proc = subprocess.run([sys.executable, "-c", "import sys, adk_ray.dashboards, adk_ray.dashboard; "
                           "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')]; "
                           "assert not bad, bad"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_large_store_keeps_every_seed_and_aggregates_curves(tmp_path):
    """10k rows (the benchmark's size; its timing lives in benchmarks/dashboard_render.py)."""
    root = str(write_synthetic_results(str(tmp_path), seeds=39, curve_steps=10))
    html = render_html(load_results(root))
    assert "Could not draw" not in html
    assert plot_divs(html) == 5
    boxes = [t for t in _figure_json(html, 1)["data"] if t["type"] == "box"]
    assert all(len(pts) == 39 for b in boxes for pts in b["y"])
    # curves: per setting, pipeline and panel one band and one median line, never one trace per seed
    curves = _figure_json(html, 3)["data"]
    assert len(curves) == 10 * 2 * 4 * 2
    assert all(len(t["x"]) <= 2 * 10 for t in curves)


def test_file_uri_results_dir(synthetic, tmp_path):
    out = write_dashboard("file://" + synthetic, "file://" + str(tmp_path / "uri.html"))
    assert out.startswith("file://")
    html = (tmp_path / "uri.html").read_text(encoding="utf-8")
    assert plot_divs(html) == 5 and "Could not draw" not in html
    assert [p.name for p in tmp_path.iterdir()] == ["uri.html"]


def test_a_failing_block_becomes_a_notice(synthetic, monkeypatch):
    from adk_ray.dashboards import blocks

    def broken(*a, **k):
        raise ValueError("odd rows")
    monkeypatch.setattr(blocks, "learning_curves", broken)
    html = render_html(load_results(synthetic))
    assert "Could not draw the learning curves: ValueError: odd rows" in html
    assert plot_divs(html) == 4  # everything else still there


def test_rows_of_other_runs_in_the_folder_are_not_drawn(tmp_path):
    """A --smoke (or --set) run writes beside the full sweep; sweep.json names the latest run's trials."""
    import json

    import pandas as pd

    from adk_ray.dashboards.load import load_results

    data = tmp_path / "data"
    data.mkdir()
    row = dict(sweep="s", world="mog", algorithm="ppo", pipeline="A-K", stage="final", beta=1.0, iterations=300,
               seed=0, final_average_reward=1.0, target_precision=0.0, overall_precision=0.0, overall_recall=0.0,
               status="ok")
    for tid in ("latest", "older"):
        pd.DataFrame([{**row, "trial_id": tid}]).to_parquet(data / f"{tid}.parquet")
    sweep = {"name": "s", "world": "mog", "grid": [{"beta": [1.0]}], "trials": [{"trial_id": "latest", "params": {}}]}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    res = load_results(str(tmp_path))
    assert res.rows["trial_id"].tolist() == ["latest"]
    assert any("other runs" in n for n in res.notices)
    (tmp_path / "sweep.json").write_text(json.dumps({**sweep, "search": {"kind": "optuna"}}))
    assert sorted(load_results(str(tmp_path)).rows["trial_id"]) == ["latest", "older"]
