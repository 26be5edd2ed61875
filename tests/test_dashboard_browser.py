"""Dashboards in a real browser: headless Chromium opens the page, every figure must draw, no JS error.

The last test renders the dashboard of a real `mog_ppo --smoke` sweep (fixture `smoke_results` in
conftest.py). Screenshots go to the test's tmp dir and, when ADK_SCREENSHOT_DIR is set, are copied
there for a human to look at.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time

import pyarrow.parquet as pq
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from adk_ray.dashboards import write_dashboard
from adk_ray.dashboards.index import write_index
from adk_ray.dashboards.synthetic import write_synthetic_results

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# As this machine requires: root needs --no-sandbox; without the background-networking flags
# Chromium floods the closed network with refused connections.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,3000"]
ERROR_HOOK = ("window.__testErrors=[];window.addEventListener('error',function(e){"
              "window.__testErrors.push(String(e.message))});")


@pytest.fixture
def browser(tmp_path):
    for exe in (CHROMIUM, CHROMEDRIVER):
        assert os.path.exists(exe), f"{exe} is missing: the browser tests need Debian's chromium and chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    # window.onerror before any page script runs, so errors during load are caught too.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_HOOK})
    try:
        yield driver
    finally:
        driver.quit()


def open_dashboard(driver, path: str, shot: str, tmp_path) -> dict:
    """Load the page, wait for every figure to draw, collect errors and per-figure trace counts."""
    driver.get("file://" + os.path.abspath(path))
    # Counted inside the wait, not once after get(): chromedriver can return before the body is parsed, and
    # a count of 0 taken then never matched (seen once in 6 runs).
    state = ("return [document.readyState, document.querySelectorAll('.plotly-graph-div').length, "
             "document.querySelectorAll('.js-plotly-plot').length]")
    try:
        WebDriverWait(driver, 120).until(lambda d: (lambda st: st[0] == "complete" and 0 < st[1] == st[2])(
            d.execute_script(state)))
    except TimeoutException:
        raise AssertionError(f"{path}: [readyState, figures, figures drawn] = {driver.execute_script(state)} after "
                             f"120 s; errors {driver.execute_script('return window.__testErrors || []')}; "
                             f"browser log {driver.get_log('browser')[:5]}") from None
    info = driver.execute_script("""
        const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
        return {divs: document.querySelectorAll('.plotly-graph-div').length,
                traces: plots.map(el => (el.data || []).length),
                rendered: plots.map(el => el.querySelectorAll('.main-svg').length > 0),
                errors: (window.__testErrors || []).concat(window.__dashboardErrors || []),
                h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent)};""")
    info["severe"] = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    time.sleep(0.3)  # let the last figure finish painting before the screenshot
    png = tmp_path / shot
    driver.save_screenshot(str(png))
    if os.environ.get("ADK_SCREENSHOT_DIR"):
        os.makedirs(os.environ["ADK_SCREENSHOT_DIR"], exist_ok=True)
        shutil.copy(png, os.path.join(os.environ["ADK_SCREENSHOT_DIR"], shot))
    return info


def assert_clean(info: dict, n_figures: int) -> None:
    assert info["errors"] == [], info["errors"]
    assert info["severe"] == [], info["severe"]
    assert info["divs"] == n_figures
    assert len(info["traces"]) == n_figures, "some plotly divs were never drawn"
    assert all(n > 0 for n in info["traces"]), info["traces"]
    assert all(info["rendered"])


def test_synthetic_mog_dashboard_in_chromium(browser, tmp_path):
    root = write_synthetic_results(str(tmp_path / "store"), seeds=8)
    info = open_dashboard(browser, write_dashboard(root), "dashboard_synthetic_mog.png", tmp_path)
    assert_clean(info, 5)  # β and iteration sections, learning curves, densities, reward histogram
    assert info["traces"][:2] == [8, 8]  # 4 metric panels × (K-A, A-K)
    assert "Failed trials" in info["h2"]
    # hovering a seed's point shows its value with the box's median and IQR
    hover = browser.execute_script("""
        const gd = document.getElementById('fig-1'), p = gd.calcdata[0][1].pts[0];
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        Plotly.Fx.hover(gd, {xpx: xa.c2p(p.x), ypx: ya.c2p(p.y)}, 'xy');
        return Array.from(gd.querySelectorAll('.hoverlayer text')).map(t => t.textContent).join(' ');""")
    assert "K-A, 0.1" in hover and "median" in hover and "IQR" in hover and "n=8" in hover, hover
    # the learning-curve dropdown switches settings without errors
    browser.execute_script("""
        const el = document.getElementById('fig-3');
        const btn = el.layout.updatemenus[0].buttons[2];
        return Plotly.restyle(el, btn.args[0]);""")
    visible = browser.execute_script(
        "return document.getElementById('fig-3').data.filter(t => t.visible === true).length")
    assert visible == 4 * 2 * 2  # panels × pipelines × (band, median)
    assert browser.execute_script("return window.__testErrors") == []


def test_index_links_pages_that_share_one_plotly_js(browser, tmp_path):
    """A gallery: two sweeps' pages load the one ../plotly.min.js and draw offline; the index links both."""
    storage = tmp_path / "store"
    for name in ("synthetic_ppo", "synthetic_dpo"):
        write_dashboard(write_synthetic_results(str(storage / name), seeds=8, sweep=name), plotly_js="shared")
    assert (storage / "plotly.min.js").stat().st_size > 1_000_000
    assert all((storage / n / "dashboard.html").stat().st_size < 1_000_000 for n in ("synthetic_ppo", "synthetic_dpo"))
    browser.get("file://" + write_index(str(storage)))
    links = browser.execute_script("return Array.from(document.querySelectorAll('h2 a')).map(a => a.href)")
    assert [link.split("/")[-2:] for link in links] == [["synthetic_dpo", "dashboard.html"],
                                                       ["synthetic_ppo", "dashboard.html"]]
    assert len(browser.find_elements("css selector", "table.glance")) == 2
    info = open_dashboard(browser, links[1][len("file://"):], "dashboard_shared_plotly.png", tmp_path)
    assert_clean(info, 5)


def test_synthetic_llm_dashboard_in_chromium(browser, tmp_path):
    root = write_synthetic_results(str(tmp_path / "store"), seeds=3, world="llm", with_models=False)
    info = open_dashboard(browser, write_dashboard(root), "dashboard_synthetic_llm.png", tmp_path)
    assert_clean(info, 5)  # 2 sections, learning curves, trajectory, model selection
    assert "Trajectories (Figure 5)" in info["h2"] and "Model selection" in info["h2"]


@pytest.mark.slow
def test_smoke_sweep_dashboard_in_chromium(browser, smoke_results, tmp_path):
    """The page a researcher opens after `python -m adk_ray.sweep mog_ppo --smoke`."""
    results = str(smoke_results)
    spec = json.load(open(os.path.join(results, "sweep.json")))
    rows = [pq.read_table(f).to_pandas() for f in glob.glob(os.path.join(results, "data", "*.parquet"))]
    models = [pq.read_table(f).to_pandas() for f in glob.glob(os.path.join(results, "models", "*.parquet"))]
    assert rows and models, "the smoke sweep wrote no data or no models"
    # One boxplot section per group_by axis and sub-grid it varies in (at least one per axis),
    # learning curves when curve rows exist, and two MoG pictures per KD setting (one here).
    grids = spec["grid"] if isinstance(spec["grid"], list) else [spec["grid"]]
    sections = sum(max(1, sum(len(g.get(a, [])) > 1 for g in grids)) for a in spec["group_by"])
    has_curves = any((r["stage"] == "curve").any() for r in rows)
    expected = sections + int(has_curves) + 2

    out = write_dashboard(results, str(tmp_path / "smoke.html"))
    info = open_dashboard(browser, out, "dashboard_smoke_mog_ppo.png", tmp_path)
    assert_clean(info, expected)
    assert info["traces"][:sections] == [8] * sections  # both pipelines in all four panels
    assert any(h.startswith("Sweep over β") for h in info["h2"])
    assert any(h.startswith("Sweep over iterations") for h in info["h2"])
    assert any("low-recall trap" in h for h in info["h2"])
    counts = browser.execute_script(
        "return ['done','failed','total'].map(k => document.querySelector('#count-' + k + ' b').textContent)")
    n_trials = len({t for r in rows for t in r.loc[r["status"] == "ok", "trial_id"]})
    assert counts[0] == str(n_trials) and counts[1] == "0"
