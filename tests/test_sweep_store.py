"""The results store, the row tables and the Optuna searcher, without a Ray cluster."""
from __future__ import annotations

import math

import pyarrow.dataset as ds

from adk_ray.service.execute import TrialContext, run_and_store
from adk_ray.service.objective import objective
from adk_ray.service.plan import trial_id_of
from adk_ray.service.rows import TrialMeta, error_table, ok_table
from adk_ray.service.schema import results_schema
from adk_ray.service.search import CONSTRAINT_KEY, make_searcher, past_trials
from adk_ray.service.spec import load_spec
from adk_ray.service.smoke import shrink
from adk_ray.service.store import ResultStore
from adk_ray.service.worlds import MOG
from adk_ray.worlds.mog.config import MoGTrialConfig

TINY = MoGTrialConfig(iterations=(5, 10), seeds=(0, 1), sft_iterations=20, kd_iterations=20, eval_samples=256,
                      eval_every=5, batch_size=64)
META = TrialMeta(sweep="t", code_version="test", world=MOG)


def test_error_rows_carry_the_params_and_null_metrics():
    t = error_table(TINY, META, "FloatingPointError: boom", 1.5)
    assert t.schema == results_schema(MOG)
    rows = t.to_pylist()
    assert len(rows) == 2 * 2 * 2  # pipelines × seeds × iteration counts
    assert {(r["pipeline"], r["seed"], r["iterations"]) for r in rows} == \
        {(p, s, i) for p in ("K-A", "A-K") for s in (0, 1) for i in (5, 10)}
    assert all(r["stage"] == "final" and r["status"] == "error" and r["error"] == "FloatingPointError: boom"
               and r["final_average_reward"] is None and r["beta"] == 1.0 and r["trial_id"] == trial_id_of(TINY)
               for r in rows)


def test_a_real_trial_is_written_atomically_with_the_fixed_schema(tmp_path):
    ctx = TrialContext(storage=str(tmp_path), meta=META)
    table = run_and_store(TINY, ctx)
    store = ResultStore(str(tmp_path), "t")
    tid = trial_id_of(TINY)
    assert store.finished_ids() == {tid}
    assert sorted(p.name for p in (tmp_path / "t" / "data").iterdir()) == [f"{tid}.parquet"]  # no temp left
    assert (tmp_path / "t" / "models" / f"{tid}.parquet").exists()
    back = ds.dataset(str(tmp_path / "t" / "data")).to_table()
    assert back.schema == results_schema(MOG) and back.num_rows == table.num_rows
    finals = [r for r in back.to_pylist() if r["stage"] == "final"]
    assert len(finals) == 2 * 2 * 2 and all(r["status"] == "ok" and r["error"] is None for r in finals)
    assert all(math.isfinite(r["target_precision"]) for r in finals)
    out = objective(back, load_spec("mog_kd_beta_search").search)
    assert set(out) == {"target_precision", CONSTRAINT_KEY} and math.isfinite(out["target_precision"])


def test_a_failing_world_becomes_error_rows(tmp_path):
    bad = TINY.replace(lr=1e30)
    table = run_and_store(bad, TrialContext(storage=str(tmp_path), meta=META))
    assert set(table.column("status").to_pylist()) == {"error"}
    assert "non-finite" in table.column("error")[0].as_py()
    assert ResultStore(str(tmp_path), "t").failed_ids([trial_id_of(bad)]) == [trial_id_of(bad)]


def test_temporaries_are_invisible_and_cleaned(tmp_path):
    store = ResultStore(str(tmp_path), "t")
    store.write_trial("abc", error_table(TINY, META, "x", None), None)
    stale = tmp_path / "t" / "data" / ".def.parquet.1234.tmp"
    stale.write_bytes(b"half a file")
    assert store.finished_ids() == {"abc"}
    assert ds.dataset(str(tmp_path / "t" / "data")).to_table().num_rows == 8
    store.remove_temporaries()
    assert not stale.exists()


def test_optuna_search_warm_starts_and_hands_constraints_to_optuna(tmp_path):
    spec = shrink(load_spec("mog_kd_beta_search"))
    store = ResultStore(str(tmp_path), spec.name)
    base = MoGTrialConfig.from_dict({**spec.fixed, "seeds": spec.seeds})
    done = base.replace(kd_beta=3.0)
    rows = [{"pipeline": "A-K", "stage": "final", "seed": s, "iterations": 30, "target_precision": -2.0 - s,
             "overall_recall": -4.0} for s in spec.seeds]
    store.write_trial(trial_id_of(done), ok_table(rows, done, META, 1.0), None)

    past = past_trials(store, base, spec.search)
    assert [(tid, params) for tid, params, _ in past] == [(trial_id_of(done), {"kd_beta": 3.0})]
    assert past[0][2] == {"target_precision": -2.5, CONSTRAINT_KEY: 1.0}  # median; -3.0 - (-4.0)

    searcher = make_searcher(spec.search, past)
    study = searcher._ot_study
    assert [t.params for t in study.trials] == [{"kd_beta": 3.0}]
    assert study.trials[0].constraints == {"constraint": 1.0}
    config = searcher.suggest("tune-1")
    assert 1.0 <= config["kd_beta"] <= 10.0
    searcher.on_trial_complete("tune-1", {"target_precision": -1.0, CONSTRAINT_KEY: -0.5, "training_iteration": 1})
    assert study.trials[-1].value == -1.0 and study.trials[-1].constraints == {"constraint": -0.5}
