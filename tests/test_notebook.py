"""examples/quickstart.ipynb runs end to end in a real Jupyter kernel (nbclient + ipykernel) and shows what it
promises: the MoG and LLM smoke sweeps' rows as DataFrames, their verdict tables, plotly boxplots inline.

Its storage is the session's LLM storage, so the LLM part reuses the tiny preset's cast (p*, p', p'',
p_target) that tests/test_llm_ray_chain.py or the llm_pad smoke sweep (alphabetically earlier) left in its
llm_cache/, and trains only what `llm_ppo --smoke` adds (alignment, A-K's final distillation); run alone,
it builds the cast too (minutes)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from adk_ray.columns import METRICS

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
PLOTLY = "application/vnd.plotly.v1+json"


def _outputs(nb, needle: str) -> list[dict]:
    """Outputs of the code cell whose source contains `needle`."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)
    return cell.outputs


def _result(nb, needle: str) -> dict:
    """The execute_result / display data bundles of that cell."""
    return [o["data"] for o in _outputs(nb, needle) if o.output_type in ("execute_result", "display_data")]


@pytest.mark.slow
def test_quickstart_notebook_runs_and_shows_results(ray_env, llm_storage, monkeypatch):
    for k in ("RAY_TMPDIR", "TMPDIR", "RAY_USAGE_STATS_ENABLED", "RAY_DEDUP_LOGS", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"):
        monkeypatch.setenv(k, ray_env[k])  # the kernel (and its Ray) inherit the test's environment
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("ADK_RAY_STORAGE", str(llm_storage))
    monkeypatch.setenv("ADK_RAY_QUICKSTART_LLM", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    # One extra cell reports what the notebook's variables hold, so the checks read numbers, not rendered text.
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json\n"
        "def _facts(rows, table):\n"
        "    return {'shape': list(rows.shape), 'columns': list(rows.columns),\n"
        "            'verdicts': table[['beta', 'metric', 'K-A median', 'A-K median', 'verdict']].to_dict('records')}\n"
        "print(json.dumps({'mog': _facts(mog, mog_verdicts), 'again': list(again.shape),\n"
        "                  'llm': _facts(llm, llm_verdicts) if run_llm else None}))"))
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    facts = json.loads(nb.cells[-1].outputs[-1]["text"])

    for world, betas in (("mog", 3), ("llm", None)):
        f = facts[world]
        assert f["shape"][0] > 0 and {"trial_id", "pipeline", "stage", "beta", "seed", "status", *METRICS} <= set(
            f["columns"]), f["columns"]
        # the verdict table: a row per (beta, metric), finite medians of both pipelines
        assert {v["metric"] for v in f["verdicts"]} == set(METRICS)
        if betas:
            assert len({v["beta"] for v in f["verdicts"]}) == betas and len(f["verdicts"]) == betas * len(METRICS)
        for v in f["verdicts"]:
            assert math.isfinite(v["K-A median"]) and math.isfinite(v["A-K median"]), v
            assert v["verdict"] in ("", "A-K", "K-A")
    assert facts["again"] == facts["mog"]["shape"]  # load_results reads back the very rows run_sweep returned

    # the first rows of the MoG DataFrame are shown as a table
    shown = _result(nb, 'run_sweep("mog_ppo"')
    assert any("final_average_reward" in d.get("text/html", "") and "K-A" in d["text/html"] for d in shown)
    # one plotly boxplot inline per world, a trace per pipeline
    figs = [d[PLOTLY] for d in _result(nb, "fig.show()") if PLOTLY in d]
    assert len(figs) == 1 and {t["name"] for t in figs[0]["data"]} == {"K-A", "A-K"}
    llm_figs = [d[PLOTLY] for d in _result(nb, "if run_llm:") if PLOTLY in d]
    assert len(llm_figs) == 1 and {t["name"] for t in llm_figs[0]["data"]} == {"K-A", "A-K"}
