"""Sweep files, --set, --smoke, the planner and the CLI's handling of bad input (no Ray started)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from adk_ray.service.cli import main
from adk_ray.service.overrides import apply_sets, parse_set
from adk_ray.service.plan import plan_trials
from adk_ray.service.smoke import shrink
from adk_ray.service.spec import load_spec, parse_spec
from adk_ray.service.values import SpecError
from adk_ray.worlds.mog.config import MoGTrialConfig

PAPER_SWEEPS = {"mog_ppo", "mog_grpo", "mog_dpo", "mog_dpo_offline", "mog_multi_target_ppo",
                "mog_multi_target_dpo", "mog_multi_target_grpo", "mog_kd_modes", "mog_kd_beta",
                "mog_kd_beta_search"}

GOOD = """\
# Hypothesis: a test sweep
world: mog
fixed: {algorithm: ppo, eval_every: 50}
grid:
  - {beta: [0.1, 1.0], iterations: [300]}
  - {beta: [1], iterations: [100, 300]}
seeds: 3
group_by: [beta, iterations]
"""


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------ bad input

BAD_YAML = {
    "malformed": ("# Hypothesis: x\ngrid: [ {beta: [1.0}\n", "malformed YAML"),
    "unknown_fixed_key": ("# Hypothesis: x\nfixed: {betta: 1.0}\n", "unknown key 'betta'; valid keys: algorithm"),
    "unknown_axis_key": ("# Hypothesis: x\ngrid: [{lrr: [0.1]}]\n", "unknown key 'lrr'"),
    "unknown_top_key": ("# Hypothesis: x\ngrids: []\n", "unknown top-level key(s) grids; valid keys: world"),
    "negative_beta": ("# Hypothesis: x\ngrid: [{beta: [0.1, -1.0]}]\n", "beta must be > 0"),
    "zero_seeds": ("# Hypothesis: x\nseeds: 0\n", "number of seeds must be >= 1"),
    "bad_type": ("# Hypothesis: x\nfixed: {beta: high}\n", "'high' is not a float"),
    "bad_algorithm": ("# Hypothesis: x\nfixed: {algorithm: sac}\n", "is not one of ppo, grpo, dpo_online, dpo_offline"),
    "no_hypothesis": ("world: mog\n", "first line must be a '# Hypothesis"),
    "bad_world": ("# Hypothesis: x\nworld: atari\n", "valid worlds: mog"),
    "search_and_grid": ("# Hypothesis: x\ngrid: [{beta: [1.0]}]\nsearch: {metric: target_precision, "
                        "num_samples: 2, space: {kd_beta: {low: 1, high: 2}}}\n", "either a grid or a search"),
    "bad_search_metric": ("# Hypothesis: x\nsearch: {metric: accuracy, num_samples: 2, "
                          "space: {kd_beta: {low: 1, high: 2}}}\n", "metric 'accuracy' is not one of"),
    "search_range_invalid": ("# Hypothesis: x\nsearch: {metric: target_precision, num_samples: 2, "
                             "space: {kd_beta: {low: 0.5, high: 2}}}\n", "kd_beta must be >= 1"),
    "bad_constraint": ("# Hypothesis: x\nsearch: {metric: target_precision, num_samples: 2, "
                       "space: {kd_beta: {low: 1, high: 2}}, constraint: recall > -3}\n", "constraint metric 'recall'"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_sweep_file_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    text, expected = BAD_YAML[case]
    storage = tmp_path / "results"
    code, out, err = run_cli(capsys, write(tmp_path, text), "--storage", str(storage))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not storage.exists()


BAD_ARGS = {
    "unknown_sweep": (["no_such_sweep"], "unknown sweep 'no_such_sweep'; valid sweeps: "),
    "set_syntax": (["mog_ppo", "--set", "beta"], "expected KEY=VALUE"),
    "set_empty_item": (["mog_ppo", "--set", "beta=1.0,"], "expected KEY=VALUE"),
    "set_unknown_key": (["mog_ppo", "--set", "bta=1"], "unknown key 'bta'; valid keys: algorithm"),
    "set_negative_beta": (["mog_ppo", "--set", "beta=-0.5"], "beta must be > 0"),
    "set_zero_seeds": (["mog_ppo", "--set", "seeds=0"], "number of seeds must be >= 1"),
    "set_bad_value": (["mog_ppo", "--set", "n_final_modes=four"], "'four' is not an int"),
    "set_bad_choice": (["mog_ppo", "--set", "target=triple"], "target 'triple' is not one of single, double"),
    "set_searched_key": (["mog_kd_beta_search", "--set", "kd_beta=2"], "kd_beta is searched"),
    "bad_flag": (["mog_ppo", "--max-concurrent", "0"], "must be >= 1"),
    "unknown_flag": (["mog_ppo", "--frobnicate"], "unrecognized arguments"),
    "no_name": ([], "a sweep NAME is required; valid sweeps: "),
    "unreachable_ray": (["mog_ppo", "--address", "127.0.0.1:1"], "cannot reach Ray at 127.0.0.1:1"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(case, tmp_path, capsys):
    argv, expected = BAD_ARGS[case]
    storage = tmp_path / "results"
    code, out, err = run_cli(capsys, *argv, "--storage", str(storage))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not storage.exists()


def test_unwritable_storage_exits_2_and_leaves_nothing(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "mog_ppo", "--storage", str(blocker / "results"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is not writable" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_storage_probe_removes_what_it_created(tmp_path, capsys):
    storage = tmp_path / "deep" / "er" / "results"
    code, out, _ = run_cli(capsys, "mog_ppo", "--dry-run", "--storage", str(storage))
    assert code == 0 and len(out.splitlines()) == 6
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ --list, --help

def test_list_names_every_sweep_with_its_hypothesis(capsys):
    code, out, _ = run_cli(capsys, "--list")
    assert code == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines()}
    assert PAPER_SWEEPS <= set(lines)
    assert "Hypothesis: under PPO, A-K ends with higher reward" in lines["mog_ppo"]


def test_help_explains_set_and_exit_codes(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for word in ("--storage", "--set", "--smoke", "--list", "--address", "--max-concurrent", "seeds=N", "exit codes"):
        assert word in out


@pytest.mark.parametrize("name", sorted(PAPER_SWEEPS))
def test_every_shipped_sweep_is_valid(name):
    spec = load_spec(name)
    assert spec.hypothesis.startswith("Hypothesis:")
    if spec.search:
        assert spec.search.kind == "optuna" and spec.search.constraint is not None
    else:
        assert plan_trials(spec) and plan_trials(shrink(spec))


def test_paper_sweeps_have_the_figure_grids():
    for name in ("mog_ppo", "mog_grpo", "mog_dpo", "mog_dpo_offline"):
        spec = load_spec(name)
        assert spec.seeds == tuple(range(20)) and spec.fixed["eval_every"] == 50
        # mog_grpo also sweeps GRPO's KL direction on both sub-grids (docs/mog.md)
        grids = [{k: v for k, v in g.items() if k != "grpo_kl"} for g in spec.grid]
        assert all(g.get("grpo_kl") == ("reverse", "k3") for g in spec.grid) == (name == "mog_grpo")
        assert grids[0] == {"beta": (0.05, 0.1, 0.3, 0.5, 1.0, 2.0), "iterations": (300,)}
        assert grids[1] == {"beta": (1.0,), "iterations": (100, 300, 500, 1000, 2000, 3000)}
    assert {load_spec(n).fixed["algorithm"] for n in ("mog_ppo", "mog_grpo", "mog_dpo", "mog_dpo_offline")} == \
        {"ppo", "grpo", "dpo_online", "dpo_offline"}
    for name in ("mog_multi_target_ppo", "mog_multi_target_dpo", "mog_multi_target_grpo"):
        assert load_spec(name).fixed["target"] == "double"
    assert load_spec("mog_kd_beta").grid[0]["kd_beta"] == (1.0, 1.25, 2.0, 5.0, 10.0)
    assert load_spec("mog_kd_modes").grid[0]["n_final_modes"] == (3, 4)


# ------------------------------------------------------------------------------------------ planner

def test_planner_merges_points_that_differ_only_in_iterations():
    trials = plan_trials(load_spec("mog_ppo"))
    assert len(trials) == 6  # 6 β values; β=1.0's 300 from the β sweep joins the iteration sweep
    by_beta = {t.config.beta: t.config for t in trials}
    assert by_beta[1.0].iterations == (100, 300, 500, 1000, 2000, 3000)
    assert all(by_beta[b].iterations == (300,) for b in (0.05, 0.1, 0.3, 0.5, 2.0))
    assert all(t.config.seeds == tuple(range(20)) for t in trials)
    assert len({t.trial_id for t in trials}) == 6 and all(len(t.trial_id) == 12 for t in trials)


def test_int_and_float_spellings_are_one_point(tmp_path):
    spec = parse_spec(GOOD, "t", "t.yaml")  # beta 1.0 in one sub-grid, 1 in the other
    trials = plan_trials(spec)
    assert [(t.config.beta, t.config.iterations) for t in trials] == [(0.1, (300,)), (1.0, (100, 300))]


def test_trial_ids_are_stable_and_depend_on_every_setting():
    a = [t.trial_id for t in plan_trials(load_spec("mog_ppo"))]
    assert a == [t.trial_id for t in plan_trials(load_spec("mog_ppo"))]
    b = [t.trial_id for t in plan_trials(apply_sets(load_spec("mog_ppo"), ["seeds=5"]))]
    assert not set(a) & set(b)


# ------------------------------------------------------------------------------------------ --set

def test_parse_set():
    assert parse_set("beta=1.0,2.0", MoGTrialConfig) == ("beta", ["1.0", "2.0"])
    assert parse_set(" seeds = 8 ", MoGTrialConfig) == ("seeds", ["8"])
    for bad in ("beta", "=1", "beta=", "beta=1,,2"):
        with pytest.raises(SpecError):
            parse_set(bad, MoGTrialConfig)


def test_set_replaces_an_axis_in_every_sub_grid_and_sets_seeds():
    spec = apply_sets(parse_spec(GOOD, "t", "t.yaml"), ["beta=1.0,2.0", "seeds=8"])
    assert [sub["beta"] for sub in spec.grid] == [(1.0, 2.0), (1.0, 2.0)]
    assert spec.seeds == tuple(range(8))
    assert apply_sets(spec, ["seeds=3,5"]).seeds == (3, 5)
    assert apply_sets(spec, ["seeds=4"]).seeds == (0, 1, 2, 3)


def test_set_fixed_value_and_new_axis():
    spec = apply_sets(parse_spec(GOOD, "t", "t.yaml"), ["lr=1e30", "kd_beta=1.25,2", "grpo_std_normalize=true"])
    assert spec.fixed["lr"] == 1e30 and spec.fixed["grpo_std_normalize"] is True
    assert all(sub["kd_beta"] == (1.25, 2.0) for sub in spec.grid)
    assert len(plan_trials(spec)) == 4  # 2 β × 2 β_KD
    iters = apply_sets(parse_spec("# Hypothesis: x\nfixed: {beta: 1.0}\n", "t", "t.yaml"), ["iterations=100,300"])
    assert [t.config.iterations for t in plan_trials(iters)] == [(100, 300)]


# ------------------------------------------------------------------------------------------ --smoke

def test_smoke_keeps_the_shape_and_shrinks_the_sizes():
    spec = shrink(load_spec("mog_ppo"))
    assert spec.smoke and spec.seeds == (0, 1)
    trials = plan_trials(spec)
    assert [(t.config.beta, t.config.iterations) for t in trials] == [(0.05, (30,)), (0.1, (30,)), (1.0, (15, 30))]
    cfg = trials[0].config
    assert (cfg.sft_iterations, cfg.kd_iterations, cfg.eval_samples, cfg.eval_every) == (60, 60, 512, 10)
    assert shrink(load_spec("mog_kd_beta_search")).search.num_samples == 2
    # --set is applied after --smoke, so an explicit override wins
    assert apply_sets(spec, ["seeds=3"]).seeds == (0, 1, 2)


def test_a_spelled_out_default_is_the_same_trial():
    spec = parse_spec("# Hypothesis: x\nfixed: {beta: 1.0}\ngrid:\n  - {kd_beta: [1.25], iterations: [100]}\n"
                      "  - {n_final_modes: [4], iterations: [300]}\n", "t", "t.yaml")
    trials = plan_trials(spec)  # kd_beta 1.25 and n_final_modes 4 are both the defaults
    assert len(trials) == 1 and trials[0].config.iterations == (100, 300)
