"""Several sweeps in one command: one Ray session, the MoG stage cache shared by the storage, the index
page; --list by world; a bad name among good ones stops everything before anything is written."""
from __future__ import annotations

import dataclasses
import html
import os
import shutil

import pandas as pd

from adk_ray.service.cli import main
from adk_ray.service.execute import TrialContext, cache_dir_for, run_and_store
from adk_ray.service.plan import trial_id_of
from adk_ray.service.rows import TrialMeta, error_table
from adk_ray.service.spec import list_sweeps, load_spec
from adk_ray.service.store import ResultStore
from adk_ray.service.worlds import MOG
from adk_ray.worlds.mog.config import MoGTrialConfig

from conftest import read_rows

# One trial per sweep: β and iterations replaced in every sub-grid, which then merge.
TINY = ("--smoke", "--set", "beta=1.0", "--set", "iterations=20")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cache_files(storage) -> dict[str, tuple[int, int]]:
    d = os.path.join(storage, "mog_cache")
    return {f: (os.stat(os.path.join(d, f)).st_ino, os.stat(os.path.join(d, f)).st_mtime_ns)
            for f in os.listdir(d) if f.endswith(".pt")}


def test_sweeps_and_a_search_in_one_session(run_sweep, tmp_path):
    storage = tmp_path / "results"
    names = ("mog_ppo", "mog_dpo", "mog_kd_beta_search")
    proc = run_sweep(*names, *TINY, "--storage", str(storage))
    assert proc.returncode == 0, proc.stderr[-4000:]
    # one bar over both grids' trials (one Tune run) and the search's 2 samples (its own Tune run, beside it)
    assert "3 sweeps:" in proc.stderr and "4/4" in proc.stderr
    for name, algorithm in zip(names, ("ppo", "dpo_online", "ppo")):
        rows = read_rows(storage / name)
        assert set(rows["sweep"]) == {name} and set(rows["algorithm"]) == {algorithm}
        assert (rows["status"] == "ok").all() and (rows["stage"] == "final").any()
        assert (storage / name / "dashboard.html").exists()
    search_kd_betas = set(read_rows(storage / "mog_kd_beta_search")["kd_beta"])
    assert len(search_kd_betas) == 2  # two trials, each its own sampled β_KD, both counted for the search
    index = (storage / "index.html").read_text()
    for name in names:
        assert f"href='{name}/dashboard.html'" in index
        assert html.escape(load_spec(name).hypothesis) in index
    assert index.count("class='glance'") == 3
    # every sweep's p' (2 seeds) and p'' (2 seeds per β_KD: the grids' 1.25, the search's two) in the
    # storage's one cache, once each
    assert len(cache_files(storage)) == 2 + 2 * len(search_kd_betas | {1.25})
    assert not any((storage / name / "cache").exists() for name in names)


def test_second_sweep_reuses_the_first_ones_stages(tmp_path):
    """Another sweep with the same references loads them from the storage's cache: no file rewritten."""
    cfg = MoGTrialConfig(algorithm="ppo", beta=1.0, iterations=(5,), seeds=(0, 1), sft_iterations=20,
                         kd_iterations=20, eval_samples=256, eval_every=5)
    storage = str(tmp_path)

    def run(sweep: str, c: MoGTrialConfig) -> pd.DataFrame:
        ctx = TrialContext(storage=storage, meta=TrialMeta(sweep=sweep, code_version="test", world=MOG))
        return run_and_store(c, ctx).to_pandas()

    assert cache_dir_for(ResultStore(storage, "a"), MOG) == cache_dir_for(ResultStore(storage, "b"), MOG)
    first = run("a", cfg)
    before = cache_files(storage)
    second = run("b", cfg.replace(algorithm="dpo_online"))
    assert cache_files(storage) == before and len(before) == 4  # same files, same inodes and times
    p_prime = lambda df: df[df["stage"] == "p_prime"].sort_values(["pipeline", "seed"])["target_precision"]  # noqa: E731
    assert p_prime(first).tolist() == p_prime(second).tolist()
    assert (first["status"] == "ok").all() and (second["status"] == "ok").all()


def test_a_config_two_sweeps_plan_runs_once(run_sweep, tmp_path):
    """A sweep whose grid point another sweep of the command also plans copies that trial's rows: the same
    numbers and the same wall time, which a second run of the world would not have."""
    again = tmp_path / "mog_ppo_again.yaml"
    shutil.copy(list_sweeps()["mog_ppo"], again)
    storage = tmp_path / "results"
    # one trial at a time, so the copy (queued last) starts after its original finished
    proc = run_sweep("mog_ppo", str(again), *TINY, "--max-concurrent", "1", "--storage", str(storage))
    assert proc.returncode == 0, proc.stderr[-4000:]
    first, second = read_rows(storage / "mog_ppo"), read_rows(storage / "mog_ppo_again")
    assert set(second["sweep"]) == {"mog_ppo_again"} and (second["status"] == "ok").all()
    order = ["pipeline", "stage", "seed", "step", "iterations"]
    same = lambda df: df.drop(columns="sweep").sort_values(order, na_position="first").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(same(first), same(second))
    models = lambda name: pd.read_parquet(storage / name / "models").drop(columns="sweep")  # noqa: E731
    assert len(models("mog_ppo_again")) == len(models("mog_ppo")) > 0


def test_a_copy_reads_the_first_trials_files_and_runs_only_after_an_error(tmp_path):
    cfg = MoGTrialConfig(algorithm="ppo", beta=1.0, iterations=(5,), seeds=(0, 1), sft_iterations=20,
                         kd_iterations=20, eval_samples=256, eval_every=5)
    storage = str(tmp_path)

    def ctx(sweep: str, world=MOG) -> TrialContext:
        return TrialContext(storage=storage, meta=TrialMeta(sweep=sweep, code_version="test", world=world))

    def must_not_run(cfg, cache_dir):
        raise AssertionError("the world ran for a trial that had rows to copy")

    first = run_and_store(cfg, ctx("a"))
    copied = run_and_store(cfg, ctx("b", dataclasses.replace(MOG, run=must_not_run)), same_as="a")
    assert copied.drop_columns("sweep").equals(first.drop_columns("sweep"))
    assert set(copied.column("sweep").to_pylist()) == {"b"} and (copied.column("status").to_pylist()[0] == "ok")
    tid = trial_id_of(cfg)
    models = lambda sweep: ResultStore(storage, sweep).read_trial(tid)[1]  # noqa: E731
    assert models("b").drop_columns("sweep").equals(models("a").drop_columns("sweep"))
    # an original that ended in error rows is not copied: the trial runs itself
    ResultStore(storage, "c").write_trial(tid, error_table(cfg, ctx("c").meta, "boom", 0.0), None)
    rerun = run_and_store(cfg, ctx("d"), same_as="c")
    assert set(rerun.column("status").to_pylist()) == {"ok"}
    assert rerun.drop_columns(["sweep", "wall_seconds"]).equals(first.drop_columns(["sweep", "wall_seconds"]))
    # an original that has not finished has no files to copy: the trial runs itself too
    assert ResultStore(storage, "e").read_trial(tid) is None
    alone = run_and_store(cfg, ctx("f"), same_as="e")
    assert alone.drop_columns(["sweep", "wall_seconds"]).equals(first.drop_columns(["sweep", "wall_seconds"]))


def test_list_groups_sweeps_by_world(capsys):
    code, out, _ = run_cli(capsys, "--list")
    assert code == 0
    groups: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("world "):
            world = line.split()[1].rstrip(":")
            groups[world] = []
        else:
            groups[world].append(line.split()[0])
    assert set(groups) == {"mog", "llm"}
    for world, names in groups.items():
        assert names and all(load_spec(n).world.name == world for n in names)
    assert sorted(n for ns in groups.values() for n in ns) == sorted(list_sweeps())


def test_pattern_names_every_mog_sweep(capsys):
    code, out, _ = run_cli(capsys, "mog_*", "--dry-run")
    assert code == 0
    named = [ln[2:] for ln in out.splitlines() if ln.startswith("# ")]
    assert named == sorted(n for n in list_sweeps() if n.startswith("mog_"))


def test_an_unknown_name_among_good_ones_writes_nothing(tmp_path, capsys):
    for argv, expected in ((("mog_ppo", "nope"), "unknown sweep 'nope'"),
                           (("mog_ppo", "mog_zz*"), "no sweep matches 'mog_zz*'")):
        storage = tmp_path / "results"
        code, _, err = run_cli(capsys, *argv, "--storage", str(storage))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert expected in err
        assert not storage.exists()


def test_trackers_take_one_sweep(tmp_path, capsys):
    code, _, err = run_cli(capsys, "mog_ppo", "mog_dpo", "--tracker", "tensorboard", "--storage", str(tmp_path / "r"))
    assert code == 2 and "one sweep at a time" in err and not (tmp_path / "r").exists()
