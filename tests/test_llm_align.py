"""The LLM world's aligners (PPO, on/off-policy DPO and IPO, GRPO) and their model-selection rules, without Ray:
the new per-token objectives by hand, the selection rules on hand-made curves, each aligner's mechanics
on tiny models, the torch and DeepSpeed engines agreeing, and PPO raising the reward."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch

from adk_ray.objectives.rl import (clipped_value_loss, grpo_token_loss, kl_k3, masked_mean, masked_whiten,
                                   ppo_token_rewards)
from adk_ray.worlds.llm import aligners, align, responses
from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm.data import TokenSet
from adk_ray.worlds.llm.engine import DeepSpeedModuleEngine, TorchEngine
from adk_ray.worlds.llm.metrics import folded_rewards, sequence_logliks
from adk_ray.worlds.llm.models import build_model, load_model, model_info, resolve_vocab, save_model
from adk_ray.worlds.llm.presets import AlignSettings, get_preset
from adk_ray.worlds.llm.sampling import dataset_meta, sample_shard
from adk_ray.worlds.llm.aligners import select_checkpoint
from adk_ray.worlds.llm.selection import moving_average, std_fall_index

TINY = get_preset("tiny")
VOCAB = resolve_vocab(TINY.tokenizer)
# Small batches so each aligner runs a few iterations in well under a second on CPU.
SMALL = get_preset("tiny", align={
    "max_new_tokens": 8, "ppo": {"batch": 8, "mini_batch": 4}, "grpo": {"batch": 8, "group": 4, "mini_batch": 4},
    "dpo": {"responses": 8, "updates": 2, "mini_batch": 2, "grad_accum": 2, "offline_pairs": 6},
    "checkpoint_every": 2, "selection_window": 2})
REWARD = {"threshold": 1.25, "scale": 10.0, "c": 0.5}    # about half fold: R_base ≈ 1.19–1.31 under these students
PAIR_LOSS_AT_REF = {"dpo_online": math.log(2), "dpo_offline": math.log(2), "ipo_online": 1.0, "ipo_offline": 1.0}
CURVE_KEYS = {"step", "reward_mean", "reward_std", "kl", "loss", "length"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained tiny students as π_ref and p_target, and a pair set of π_ref samples for dpo_offline."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("align_models")
    policy = save_model(build_model(TINY.p_dprime, VOCAB, 1), str(root / "policy"),
                        {"role": "p_dprime", "model_id": "tiny/p_dprime/test", "preset": "tiny"})
    target = save_model(build_model(TINY.p_target, VOCAB, 2), str(root / "target"),
                        {"role": "p_target", "model_id": "tiny/p_target/test", "preset": "tiny"})
    pairs = str(root / "pairs")
    n, max_new = 2 * SMALL.align.dpo.offline_pairs + 4, SMALL.align.max_new_tokens
    sample_shard(policy, pairs, VOCAB, [0], n, n, max_new, 1.0, 1.0, seed=11)
    token_data.finish_dataset(pairs, dataset_meta(policy, VOCAB, n, 1.0, 1.0, 11, max_new, n))
    return {"policy": policy, "target": target, "pairs": pairs, "root": root}


def make_job(models, algorithm: str, out_dir, iterations: int = 5, seed: int = 0, beta: float = 0.5,
             target: str | None = None, reward: dict = REWARD) -> align.AlignJob:
    return align.AlignJob(role="p_dprime_KA", algorithm=algorithm, beta=beta, iterations=iterations,
                          policy_dir=models["policy"], target_dir=target or models["target"], reward=reward,
                          out_dir=str(out_dir), seed=seed, pairs_dir=models["pairs"])


def torch_engine(job, preset) -> TorchEngine:
    kwargs = align.engine_kwargs(job, preset, world=1)
    kwargs.pop("micro_batch")                                   # DeepSpeed's config only
    return TorchEngine(align.build_align_module(job, preset, VOCAB), **kwargs)


def close_curves(a: list[dict], b: list[dict], rtol: float, atol: float) -> bool:
    return len(a) == len(b) and all(set(x) == set(y) and all(math.isclose(x[k], y[k], rel_tol=rtol, abs_tol=atol)
                                                              for k in x) for x, y in zip(a, b))


# -- new objectives, by hand --------------------------------------------------------------------------------

def test_masked_mean_and_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert masked_mean(x, m).item() == pytest.approx(8 / 3)                       # (1 + 2 + 5) / 3
    torch.testing.assert_close(masked_mean(x, m, dim=-1), torch.tensor([1.5, 5.0]))
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0                        # empty mask: 0, not NaN
    # Valid 1, 2, 3: μ = 2, Bessel-corrected σ² = (1 + 0 + 1)/2 = 1; the masked 10 is mapped (10 − 2)/1.
    v, vm = torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(masked_whiten(v, vm), torch.tensor([-1.0, 0.0, 1.0, 8.0]))
    torch.testing.assert_close(masked_whiten(v, vm, shift_mean=False), torch.tensor([1.0, 2.0, 3.0, 10.0]))


def test_clipped_value_loss_by_hand():
    old = torch.zeros(4)
    v = torch.tensor([1.0, 1.0, 0.1, -1.0])
    ret = torch.tensor([2.0, 0.5, 0.0, -2.0])
    # v=1 → clipped 0.2: ½·max(1, 1.8²=3.24) = 1.62;  ret 0.5: ½·max(0.25, 0.09) = 0.125;
    # inside the clip: ½·0.01 = 0.005;  v=−1 → −0.2: ½·max(1, 3.24) = 1.62.
    torch.testing.assert_close(clipped_value_loss(v, old, ret, 0.2), torch.tensor([1.62, 0.125, 0.005, 1.62]))


def test_ppo_token_rewards_by_hand():
    score = torch.tensor([2.0, 3.0])
    logp_old = torch.tensor([[-1.0, -1.0, -2.0, -1.0], [-1.0, -3.0, -1.0, -1.0]])
    logp_ref = torch.tensor([[-2.0, -2.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    # row 0: t1 −0.5·(−1+2) = −0.5; t2 (last) −0.5·(−2+1) + 2 = 2.5.  row 1: t1 (last) −0.5·(−3+1) + 3 = 4.
    expected = torch.tensor([[0.0, -0.5, 2.5, 0.0], [0.0, 4.0, 0.0, 0.0]])
    torch.testing.assert_close(ppo_token_rewards(score, logp_old, logp_ref, mask, 0.5), expected)


def test_grpo_token_loss_by_hand():
    new, old, ref = torch.tensor([math.log(1.5)]), torch.tensor([0.0]), torch.tensor([0.0])
    # ρ = 1.5, A = 1: −min(1.5, 1.2) = −1.2;  k3 = 1/1.5 + ln 1.5 − 1;  β = 0.1
    k3 = 1 / 1.5 + math.log(1.5) - 1
    assert grpo_token_loss(new, old, ref, torch.tensor([1.0]), 0.1, 0.2).item() == pytest.approx(-1.2 + 0.1 * k3)
    assert kl_k3(new, ref).item() == pytest.approx(k3)


# -- pure pieces of the loop ------------------------------------------------------------------------------

def test_masks_pairs_orders_and_steps():
    # Prompt of 1 token; lengths 3 and 5 (through EOS) in a width of 5: response tokens 1…2 and 1…4.
    m = responses.response_mask(torch.tensor([3, 5]), 5, 1)
    assert m.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert responses.response_mask(torch.tensor([4]), 5, 2).tolist() == [[0, 1, 1, 0]]
    chosen, rejected = responses.label_pairs(torch.tensor([-1.0, -2.0, -3.0, -0.5, -1.0, -1.0]))
    assert chosen.tolist() == [0, 3, 4] and rejected.tolist() == [1, 2, 5]            # a tie: the first wins
    order = responses.cycled_order(4, 10, np.random.default_rng(0))
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:8]) == [0, 1, 2, 3] and len(order) == 10
    # 6 pairs, 4 per iteration over 2 ranks: iteration 2 reads pairs 4, 5, 0, 1 (wrapping).
    assert aligners.offline_pairs(2, 0, 2, 4, 6).tolist() == [4, 5]
    assert aligners.offline_pairs(2, 1, 2, 4, 6).tolist() == [0, 1]
    assert align.checkpoint_steps(10, 4) == [4, 8, 10] and align.checkpoint_steps(8, 4) == [4, 8]
    assert align.checkpoint_steps(3, 0) == [3] and align.checkpoint_steps(3, 5) == [3]
    assert align.checkpoint_dir("/x", 40) == "/x/ckpt-000040"


def test_shares_and_engine_kwargs(models, tmp_path):
    s = TINY.align
    assert aligners.rank_shares("ppo", s, 2) == (32, 4, 1) and aligners.rank_shares("grpo", s, 1) == (64, 8, 1)
    assert aligners.rank_shares("dpo_online", s, 2) == (32, s.dpo.mini_batch, s.dpo.grad_accum)
    with pytest.raises(ValueError, match="not divisible"):
        aligners.rank_shares("ppo", s, 3)
    with pytest.raises(ValueError, match="groups"):
        aligners.rank_shares("grpo", dataclasses.replace(s, grpo=dataclasses.replace(s.grpo, batch=12)), 1)
    kw = align.engine_kwargs(make_job(models, "dpo_online", tmp_path), TINY, world=1)
    assert kw == dict(lr=s.dpo.lr, grad_accum=s.dpo.grad_accum, micro_batch=s.dpo.mini_batch, warmup=0,
                      grad_clip=1.0)
    kw = align.engine_kwargs(make_job(models, "ppo", tmp_path), get_preset("full"), world=1)
    assert kw == dict(lr=1e-5, grad_accum=1, micro_batch=8, warmup=0, grad_clip=0.0)
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_job(models, "rloo", tmp_path)
    with pytest.raises(ValueError, match="pairs_dir"):
        dataclasses.replace(make_job(models, "dpo_offline", tmp_path), pairs_dir="")


def test_scores_match_the_metrics(models):
    """The loop's p_target log-likelihood and folded reward are metrics.sequence_logliks / folded_rewards,
    and the trained module's log-probabilities are the causal LM's."""
    data = token_data.read_tokens(models["pairs"], VOCAB.pad_id)
    ids, lengths = torch.from_numpy(data.tokens.astype(np.int64)), torch.from_numpy(data.lengths)
    mask = responses.response_mask(lengths, ids.shape[1], 1)
    target = load_model(models["target"])
    ll = masked_mean(responses.token_logprobs(target, ids, rows=5), mask, dim=-1)
    expected = sequence_logliks(target, TokenSet(data.tokens, data.lengths, {}), prompt_length=1)
    np.testing.assert_allclose(ll.double().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(responses.folded_reward(ll, REWARD).double().numpy(),
                               folded_rewards(expected, REWARD["threshold"], REWARD["scale"], REWARD["c"]),
                               atol=1e-5)
    module = align.build_align_module(make_job(models, "ppo", "/unused"), SMALL, VOCAB)
    logp, values = responses.module_logprobs(module, ids, rows=7)
    torch.testing.assert_close(logp, responses.token_logprobs(module.policy, ids), atol=1e-5, rtol=1e-5)
    assert torch.equal(values, torch.zeros_like(values))                            # the zero-initialised head


# -- selection rules on hand-made curves ------------------------------------------------------------------------

def curve_of(means, stds=None, margins=None) -> list[dict]:
    rows = []
    for i, m in enumerate(means):
        row = {"step": i + 1, "reward_mean": m, "reward_std": 1.0 if stds is None else stds[i]}
        if margins is not None:
            row["margin"] = margins[i]
        rows.append(row)
    return rows


def settings(window: int, ratio: float = 0.5) -> AlignSettings:
    return AlignSettings(selection_window=window, std_drop_ratio=ratio)


def test_moving_average_and_std_fall():
    np.testing.assert_allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(moving_average([3, 6, 9], 5), [3, 4.5, 6])
    np.testing.assert_allclose(moving_average([3, 6], 1), [3, 6])
    assert std_fall_index([1, 2, 3, 4, 1.9, 1], 0.5) == 4                  # 1.9 < 0.5·4
    assert std_fall_index([1, 2, 3, 4, 2.0, 2.5], 0.5) is None            # 2.0 is not below 0.5·4
    assert std_fall_index([], 0.5) is None and std_fall_index([5], 0.5) is None


def test_ppo_rule_no_fall_takes_the_best_checkpoint():
    curve = curve_of([1, 2, 3, 4, 5, 6], stds=[1, 1.2, 1.1, 1.3, 1.2, 1.25])
    step, reason = select_checkpoint("ppo", curve, [2, 4, 6], settings(1))
    assert step == 6 and "never falls" in reason


def test_ppo_rule_stops_before_the_std_falls():
    means, stds = [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 1, 1, 1, 1]
    # Window 1: the std falls at step 5 (1 < 0.5·4): checkpoints 2 and 4 precede it; 4 has the higher mean.
    step, reason = select_checkpoint("ppo", curve_of(means, stds), [2, 4, 6, 8], settings(1))
    assert step == 4 and "step 5" in reason
    # Window 2: smoothed std 1, 1.5, 2.5, 3.5, 2.5, 1, …: the fall moves to step 6 (1 < 0.5·3.5).
    step, reason = select_checkpoint("ppo", curve_of(means, stds), [2, 4, 6, 8], settings(2))
    assert step == 4 and "step 6" in reason
    # A checkpoint at the fall itself is not "before" it; a mean that dips before the fall loses.
    step, _ = select_checkpoint("ppo", curve_of([1, 5, 3, 2, 9, 9, 9, 9], stds), [2, 3, 5], settings(1))
    assert step == 2


def test_ppo_rule_fall_before_the_first_checkpoint_and_ties():
    step, reason = select_checkpoint("ppo", curve_of([1, 2, 3, 4, 5, 6], [4, 1, 1, 1, 1, 1]), [3, 6], settings(1))
    assert step == 3 and "before any checkpoint" in reason
    # Equal smoothed means: the earliest checkpoint.
    step, _ = select_checkpoint("ppo", curve_of([1, 2, 2, 2, 2, 2]), [2, 4, 6], settings(1))
    assert step == 2


def test_dpo_rule_takes_the_peak_margin():
    margins = [0.0, 1.0, 3.0, 2.0, 5.0, 0.0]
    curve = curve_of([0] * 6, margins=margins)
    assert select_checkpoint("dpo_online", curve, [2, 4, 6], settings(1))[0] == 4      # 1, 2, 0 at 2, 4, 6
    # Window 3: smoothed margins at 2, 4, 6 = 0.5, 2, 2.33: the last.
    assert select_checkpoint("dpo_offline", curve, [2, 4, 6], settings(3))[0] == 6
    tie = curve_of([0] * 4, margins=[1.0, 2.0, 0.0, 2.0])
    assert select_checkpoint("dpo_online", tie, [2, 4], settings(1))[0] == 2
    nan = curve_of([0] * 4, margins=[1.0, float("nan"), 0.0, 0.5])
    assert select_checkpoint("dpo_online", nan, [2, 4], settings(1))[0] == 4           # a NaN point never wins


def test_grpo_uses_the_ppo_rule_and_bad_input_raises():
    curve = curve_of([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 1, 1, 1, 1])
    ppo = select_checkpoint("ppo", curve, [2, 4, 6, 8], settings(1))
    grpo = select_checkpoint("grpo", curve, [2, 4, 6, 8], settings(1))
    assert grpo[0] == ppo[0] and "PPO's rule" in grpo[1]
    margins = curve_of([0] * 6, margins=[0.0, 1.0, 3.0, 2.0, 5.0, 0.0])
    ipo = select_checkpoint("ipo_offline", margins, [2, 4, 6], settings(1))
    assert ipo[0] == select_checkpoint("dpo_offline", margins, [2, 4, 6], settings(1))[0] and "DPO's rule" in ipo[1]
    with pytest.raises(ValueError, match="unknown algorithm"):
        select_checkpoint("rloo", curve, [2], settings(1))
    with pytest.raises(ValueError, match="no point on the curve"):
        select_checkpoint("ppo", curve, [2, 9], settings(1))
    with pytest.raises(ValueError, match="no checkpoints"):
        select_checkpoint("ppo", curve, [], settings(1))


# -- mechanics of each aligner ------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", list(aligners.ALIGNERS))
def test_aligner_mechanics(models, tmp_path, algorithm):
    pairs = aligners.ALIGNERS[algorithm].settings == "dpo"          # DPO and IPO, on- and off-policy
    job = make_job(models, algorithm, tmp_path / "run")
    seen = []
    engine = torch_engine(job, SMALL)
    curve = align.run_align(job, SMALL, VOCAB, engine, on_iteration=seen.append)

    # One finite point per iteration, with the keys the pipeline and dashboard read.
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5] and seen == curve
    keys = CURVE_KEYS | ({"margin", "accuracy", "reward_chosen", "reward_rejected"} if pairs else set())
    assert all(keys <= set(r) and all(math.isfinite(v) for v in r.values()) for r in curve)
    assert abs(curve[0]["kl"]) < 1e-5              # the sampling policy is π_ref before the first update
    assert all(0 < r["reward_mean"] <= REWARD["threshold"] + 1e-6 and r["reward_std"] > 0 for r in curve)
    if pairs:
        assert all(0 <= r["accuracy"] <= 1 for r in curve)

    # Checkpoints at 2, 4 and the last iteration, each the HF model alone with its model.json.
    ckpts = sorted(d for d in os.listdir(job.out_dir) if d.startswith("ckpt-"))
    assert ckpts == ["ckpt-000002", "ckpt-000004", "ckpt-000005"]
    info = model_info(align.checkpoint_dir(job.out_dir, 4))
    assert (info["role"], info["algorithm"], info["iteration"], info["reference"]) == (
        "p_dprime_KA", algorithm, 4, "tiny/p_dprime/test")

    # The policy moved, and the last checkpoint is the trained policy.
    start, last = load_model(models["policy"]), load_model(align.checkpoint_dir(job.out_dir, 5))
    moved = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), last.state_dict().values())]
    assert any(moved)
    trained = engine.module.policy.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in last.state_dict().items())

    # Selection, curve.json and align.json (written last).
    assert not align.is_aligned(job.out_dir)
    record = align.finish_align(job, SMALL, curve)
    assert align.is_aligned(job.out_dir) and align.read_align(job.out_dir) == json.loads(json.dumps(record))
    assert record["selected_step"] in (2, 4, 5) and record["checkpoints"] == [2, 4, 5]
    assert record["rule"] == ("max_margin" if pairs else "reward_before_std_drop") and record["reason"]
    assert os.path.isdir(align.selected_model_dir(job.out_dir))
    with open(os.path.join(job.out_dir, align.CURVE_FILE)) as f:
        assert json.load(f) == json.loads(json.dumps(curve))

    # The same seed gives the same curve; another seed another one.
    again = align.run_align(make_job(models, algorithm, tmp_path / "again"), SMALL, VOCAB,
                            torch_engine(job, SMALL))
    assert again == curve
    other = align.run_align(make_job(models, algorithm, tmp_path / "other", seed=1, iterations=1), SMALL, VOCAB,
                            torch_engine(job, SMALL))
    assert other[0]["reward_mean"] != curve[0]["reward_mean"]


@pytest.mark.parametrize("algorithm", list(PAIR_LOSS_AT_REF))
def test_pair_aligners_use_their_own_loss(models, tmp_path, algorithm):
    """At lr 0 the policy stays π_ref, so h = 0 on every pair: the loss is the table entry's pair loss at
    h = 0, log 2 for DPO and (1/(2β))² = 1 for IPO at β = 0.5, and the margin is 0."""
    preset = SMALL.replace(align=dataclasses.replace(SMALL.align, dpo=dataclasses.replace(SMALL.align.dpo, lr=0.0)))
    job = make_job(models, algorithm, tmp_path / "run", iterations=1)
    row, = align.run_align(job, preset, VOCAB, torch_engine(job, preset))
    assert row["loss"] == pytest.approx(PAIR_LOSS_AT_REF[algorithm], abs=1e-5)
    assert row["margin"] == pytest.approx(0.0, abs=1e-5)


def test_offline_dpo_rejects_a_short_pair_set(models, tmp_path):
    preset = dataclasses.replace(SMALL, align=dataclasses.replace(SMALL.align, dpo=dataclasses.replace(
        SMALL.align.dpo, offline_pairs=100)))
    job = make_job(models, "dpo_offline", tmp_path / "run")
    with pytest.raises(ValueError, match="needs 200"):
        align.run_align(job, preset, VOCAB, torch_engine(job, preset))


# -- the DeepSpeed engine runs the same loop ---------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["ppo", "dpo_online"])
def test_deepspeed_and_torch_engines_agree(models, tmp_path, gloo_group, algorithm):
    """PPO (value head, tuple outputs, no clipping) and on-policy DPO (gradient accumulation, clipping):
    DeepSpeed ZeRO-2 over gloo and the plain torch engine give the same curve and weights."""
    job = make_job(models, algorithm, tmp_path / "torch", iterations=4)
    curve_t = align.run_align(job, SMALL, VOCAB, torch_engine(job, SMALL))
    job_ds = dataclasses.replace(job, out_dir=str(tmp_path / "ds"))
    ds = DeepSpeedModuleEngine(align.build_align_module(job_ds, SMALL, VOCAB), world_size=1, bf16=False,
                               **align.engine_kwargs(job_ds, SMALL, world=1))
    curve_d = align.run_align(job_ds, SMALL, VOCAB, ds)
    assert close_curves(curve_t, curve_d, rtol=1e-4, atol=1e-5), (curve_t, curve_d)
    a, b = load_model(align.checkpoint_dir(job.out_dir, 4)), load_model(align.checkpoint_dir(job_ds.out_dir, 4))
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=k)


# -- behaviour ------------------------------------------------------------------------------------------------

def test_ppo_raises_the_reward(models, tmp_path):
    """PPO at a large learning rate and small β against a structured p_target (the bigram p*: a random
    student target is near-uniform, so its reward barely varies) raises the mean folded reward from the
    first to the last five of 20 iterations, and moves away from π_ref. (On this world much of the gain
    comes from shorter responses: EOS is likelier under the bigram than a typical token.)"""
    target = save_model(build_model(TINY.truth, VOCAB, TINY.truth_seed), str(tmp_path / "truth"), {"role": "truth"})
    preset = get_preset("tiny", align={"max_new_tokens": 12, "ppo": {"batch": 32, "mini_batch": 8, "lr": 1e-2},
                                       "checkpoint_every": 100})
    job = make_job(models, "ppo", tmp_path / "run", iterations=20, beta=0.05, target=target,
                   reward={"threshold": 10.0, "scale": 10.0, "c": 0.5})
    curve = align.run_align(job, preset, VOCAB, torch_engine(job, preset))
    first = np.mean([r["reward_mean"] for r in curve[:5]])
    last = np.mean([r["reward_mean"] for r in curve[-5:]])
    assert last > first + 0.3, (first, last)
    assert np.mean([r["kl"] for r in curve[-5:]]) > 0.5
