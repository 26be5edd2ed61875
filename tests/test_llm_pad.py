"""PAD as a KD stage of the LLM world (adk_ray/worlds/llm/pad_kd.py): the multiple-choice calibration
(letter order, both formats, mapping back), the rewards, the loop's mechanics and a behavioural check."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch

from adk_ray.objectives.pad import calibrated_teacher_reward, ppd_loss, vpd_loss
from adk_ray.worlds.llm import pad_kd
from adk_ray.worlds.llm.data import TokenSet
from adk_ray.worlds.llm.engine import TorchEngine
from adk_ray.worlds.llm.kd_methods import PAD_METHODS
from adk_ray.worlds.llm.metrics import sequence_logliks
from adk_ray.worlds.llm.models import (bigram_llama, bigram_table, build_model, load_model, load_tokenizer,
                                       model_info, resolve_vocab, save_model)
from adk_ray.worlds.llm.presets import TokenizerSpec, get_preset
from adk_ray.worlds.llm.sampling import Decoder

TINY = get_preset("tiny")
VOCAB = resolve_vocab(TINY.tokenizer)
EOT = "<|endoftext|>"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cast(tmp_path_factory):
    """Model directories of the tiny world: a random-init p'' student and the bigram p* as teacher (its
    likelihood ranks responses strongly; a random-init p' would rank them almost at random)."""
    d = tmp_path_factory.mktemp("pad_cast")
    student = save_model(build_model(TINY.p_dprime, VOCAB, 0), str(d / "student"), {"role": "p_dprime"})
    teacher = save_model(build_model(TINY.truth, VOCAB, TINY.truth_seed), str(d / "teacher"), {"role": "truth"})
    return student, teacher


def pad_preset(**pad):
    return TINY.replace(pad=dataclasses.replace(TINY.pad, **pad))


def engine_for(job, preset, vocab=VOCAB):
    kw = pad_kd.pad_engine_kwargs(job, preset)
    kw.pop("micro_batch")                                   # DeepSpeed's bookkeeping only
    return TorchEngine(pad_kd.build_pad_module(job, preset, vocab), **kw)


def samples(model, n: int, seed: int, temperature: float = 0.8, max_new: int = 24, vocab=VOCAB):
    dec = Decoder(model, n, len(vocab.prompt_ids) + max_new)
    tokens, lengths, _ = dec.decode(vocab.prompt_ids, max_new, temperature, 1.0, torch.Generator().manual_seed(seed),
                                    vocab.eos_id, vocab.pad_id)
    return tokens[:, :int(lengths.max())], lengths


# -- multiple choice: letter order ---------------------------------------------------------------------

def test_letter_orders_are_seeded_permutations_and_map_back():
    order = pad_kd.mc_orders(seed=3, step=5, rank=1, prompts=50, n=4)
    assert order.shape == (50, 4) and order.dtype == torch.long
    assert (order.sort(-1).values == torch.arange(4)).all()
    assert torch.equal(order, pad_kd.mc_orders(3, 5, 1, 50, 4))
    for other in (pad_kd.mc_orders(4, 5, 1, 50, 4), pad_kd.mc_orders(3, 6, 1, 50, 4), pad_kd.mc_orders(3, 5, 0, 50, 4)):
        assert not torch.equal(order, other)
    assert len({tuple(r) for r in order.tolist()}) > 10      # the orders really vary over prompts
    c = pad_kd.choice_of_response(order)
    assert torch.equal(order.gather(-1, c), torch.arange(4).expand(50, 4))   # response i sits under letter c_i


def test_choice_letter_ids_synthetic():
    assert pad_kd.choice_letter_ids(4, VOCAB) == (60, 61, 62, 63)
    with pytest.raises(ValueError):
        pad_kd.choice_letter_ids(1, VOCAB)
    with pytest.raises(ValueError):                                  # would reach the prompt token 2
        pad_kd.choice_letter_ids(26, dataclasses.replace(VOCAB, vocab_size=27))


# -- multiple choice: synthetic format -----------------------------------------------------------------

def test_synthetic_question_by_hand():
    tokens = torch.tensor([[2, 7, 8, 1, 1], [2, 9, 1, 1, 1], [2, 1, 1, 1, 1], [2, 5, 6, 5, 6]])
    lengths = torch.tensor([4, 3, 2, 5])                                  # the last row never drew EOS
    bodies = pad_kd.response_bodies(tokens, lengths, 1, VOCAB.eos_id)
    assert bodies == [[7, 8], [9], [], [5, 6, 5, 6]]
    letters = (60, 61, 62, 63)
    q = pad_kd.mc_prompt(VOCAB.prompt_ids, bodies, [2, 0, 3, 1], letters, VOCAB)
    # [x, A, y_2, B, y_0, C, y_3, D, y_1, EOS]: letter j shows response order[j].
    assert q == [2, 60, 61, 7, 8, 62, 5, 6, 5, 6, 63, 9, 1]


def test_selection_probabilities_of_a_bigram_teacher_by_hand():
    """The bigram p* answers from the EOS that ends the question alone, so its letter logits are known:
    log T[EOS, ℓ_j]. p_sel(y_i) must be T[EOS, ℓ_{c_i}] / Σ_j T[EOS, ℓ_j] with c the inverse order."""
    teacher = pad_kd.TokenLogProbs(build_model(TINY.truth, VOCAB, TINY.truth_seed).eval())
    tokens, lengths = samples(teacher.lm, 12, seed=0)                     # 3 prompts × 4 responses
    order = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3], [3, 2, 1, 0]])
    letters = pad_kd.choice_letter_ids(4, VOCAB)
    got = pad_kd.selection_log_probs(teacher, tokens, lengths, order, letters, VOCAB)
    row = bigram_table(VOCAB, TINY.truth_seed, TINY.truth.alpha, TINY.truth.eos_prob, TINY.truth.floor)[VOCAB.eos_id]
    p_letter = row[list(letters)] / row[list(letters)].sum()
    # Prompt 0: order [2, 0, 3, 1] puts y_0 under B, y_1 under D, y_2 under A, y_3 under C.
    expect0 = p_letter[[1, 3, 0, 2]].log()
    assert torch.allclose(got[0].double(), expect0, atol=1e-4)
    for g in range(3):
        c = pad_kd.choice_of_response(order[g])
        assert torch.allclose(got[g].double(), p_letter[c].log(), atol=1e-4)
    assert torch.allclose(got.exp().sum(-1), torch.ones(3), atol=1e-5)


def test_batched_questions_read_each_rows_last_position():
    """Right-padding and the gather: batched letter logits equal one unpadded forward per question, for a
    transformer whose answer does depend on the choices (a scratch Llama with large weights)."""
    spec = dataclasses.replace(TINY.p_prime, init_std=0.5)
    teacher = pad_kd.TokenLogProbs(build_model(spec, VOCAB, 1).eval())
    student = build_model(TINY.p_dprime, VOCAB, 2).eval()
    tokens, lengths = samples(student, 20, seed=3)
    order = pad_kd.mc_orders(0, 0, 0, 5, 4)
    letters = pad_kd.choice_letter_ids(4, VOCAB)
    batched = pad_kd.selection_log_probs(teacher, tokens, lengths, order, letters, VOCAB, rows=2)
    bodies = pad_kd.response_bodies(tokens, lengths, 1, VOCAB.eos_id)
    for g in range(5):
        q = pad_kd.mc_prompt(VOCAB.prompt_ids, bodies[4 * g:4 * g + 4], order[g].tolist(), letters, VOCAB)
        with torch.no_grad():
            logits = teacher.lm(input_ids=torch.tensor([q])).logits[0, -1, list(letters)]
        by_letter = torch.log_softmax(logits, -1)
        assert torch.allclose(batched[g], by_letter[pad_kd.choice_of_response(order[g])], atol=1e-5)
    assert batched.std() > 0.05                                             # not a constant answer


# -- multiple choice: text format with a locally built tokenizer ----------------------------------------

@pytest.fixture(scope="module")
def text_tokenizer(tmp_path_factory):
    """A byte-level BPE (SmolLM2's kind) trained here on a few lines: " A" … " F" are single tokens,
    " Q" is not. Saved as a local directory, loaded back through the presets' own load_tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["The cat sat on the mat.", "Question: Which text is the best?",
              *[f"{c}. The dog ran. Answer: {c}" for c in "ABCDEF"]] * 20
    tok.train_from_iterator(corpus, trainer)
    d = str(tmp_path_factory.mktemp("tokenizer"))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT).save_pretrained(d)
    spec = TokenizerSpec(source="pretrained", name=d, bos_token=EOT, eos_token=EOT)
    return spec, load_tokenizer(spec), resolve_vocab(spec)


def test_text_question_and_letters(text_tokenizer):
    spec, tok, vocab = text_tokenizer
    letters = pad_kd.choice_letter_ids(4, vocab, tok)
    assert len(set(letters)) == 4
    assert [tok.decode([i]) for i in letters] == [" A", " B", " C", " D"]
    with pytest.raises(ValueError, match="one token"):
        pad_kd.choice_letter_ids(17, vocab, tok)                            # " Q" is two tokens here
    assert pad_kd.mc_text("The", ["The cat sat.", "The\ndog  ran."]) == (
        'Question: Which of the following texts that begin with "The" is the best?\n'
        "A. The cat sat.\nB. The dog ran.\nAnswer:")
    the = list(vocab.prompt_ids[1:])
    bodies = [tok.encode(" cat sat.", add_special_tokens=False), tok.encode(" dog", add_special_tokens=False),
              [], tok.encode(" mat", add_special_tokens=False)]
    q = pad_kd.mc_prompt(vocab.prompt_ids, bodies, [3, 1, 0, 2], letters, vocab, tok)
    assert q[0] == vocab.bos_id
    assert tok.decode(q[1:]) == pad_kd.mc_text("The", ["The mat", "The dog", "The cat sat.", "The"])
    assert tok.decode(the) == "The"


def test_text_selection_with_a_bigram_teacher_by_hand(text_tokenizer):
    """The same known-logits check through the text path: a bigram teacher over the BPE vocab answers from
    the question's last token (the ':' of "Answer:")."""
    spec, tok, vocab = text_tokenizer
    vocab = dataclasses.replace(vocab, vocab_size=320)    # a bigram Llama's hidden size = vocab: 4 heads of 80
    teacher = pad_kd.TokenLogProbs(bigram_llama(vocab, seed=5, alpha=0.5, eos_prob=0.1).eval())
    student = build_model(TINY.p_dprime, vocab, 0).eval()
    tokens, lengths = samples(student, 8, seed=1, max_new=6, vocab=vocab)
    order = pad_kd.mc_orders(1, 0, 0, 2, 4)
    letters = pad_kd.choice_letter_ids(4, vocab, tok)
    got = pad_kd.selection_log_probs(teacher, tokens, lengths, order, letters, vocab, tok)
    bodies = pad_kd.response_bodies(tokens, lengths, len(vocab.prompt_ids), vocab.eos_id)
    table = bigram_table(vocab, 5, 0.5, 0.1)
    for g in range(2):
        q = pad_kd.mc_prompt(vocab.prompt_ids, bodies[4 * g:4 * g + 4], order[g].tolist(), letters, vocab, tok)
        assert tok.decode(q[-1:]) == ":"
        row = table[q[-1], list(letters)]
        expect = (row / row.sum()).log()[pad_kd.choice_of_response(order[g])]
        assert torch.allclose(got[g].double(), expect, atol=1e-4)


# -- rewards -------------------------------------------------------------------------------------------

def test_student_reward_is_the_length_normalised_loglik(cast):
    """r_stu (eq. 7) over generated tokens through EOS equals metrics.sequence_logliks; the chunked,
    checkpointed forward gives the same values and the same gradient as one big chunk."""
    model = load_model(cast[0])
    tokens, lengths = samples(model, 32, seed=4)
    ref = sequence_logliks(model, TokenSet(tokens.numpy().astype(np.int32), lengths.numpy(), {}), prompt_length=1)
    grads = []
    for chunk in (7, 100_000):
        model.zero_grad()
        r = pad_kd.response_rewards(pad_kd.TokenLogProbs(model, chunk_tokens=chunk), tokens, lengths, 1)
        assert np.allclose(r.detach().double().numpy(), ref, atol=1e-5)
        r.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_alpha_zero_is_the_uncalibrated_reward():
    r_tch = torch.randn(5, 4, dtype=torch.float32)
    log_p_sel = torch.log_softmax(torch.randn(5, 4), -1)
    assert torch.equal(calibrated_teacher_reward(r_tch, log_p_sel, 0.0), r_tch)
    assert torch.allclose(calibrated_teacher_reward(r_tch, log_p_sel, 0.8), 0.2 * r_tch + 0.8 * log_p_sel)


def test_pad_loss_dispatch_and_decomposition():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert torch.equal(pad_kd.pad_loss("pad_vpd", s, t, 10.0, 1), vpd_loss(s, t, 10.0))
    assert torch.equal(pad_kd.pad_loss("pad_ppd", s, t, 10.0, 1), ppd_loss(s, t, 10.0))
    two = pad_kd.pad_loss("pad_ppd", s, t, 10.0, 2)
    assert torch.allclose(two, ppd_loss(s[:, :2], t[:, :2], 10.0) + ppd_loss(s[:, 2:], t[:, 2:], 10.0))
    with pytest.raises(ValueError):
        pad_kd.pad_loss("seqkd", s, t, 10.0, 1)
    with pytest.raises(ValueError):
        pad_kd.pad_loss("pad_vpd", s, t, 10.0, 3)
    # Kendall τ: identical rankings 1, reversed −1.
    assert pad_kd.ranking_agreement(s, s) == 1.0 and pad_kd.ranking_agreement(s, -s) == -1.0


def test_engine_kwargs():
    preset = pad_preset(steps=25, batch=32, warmup_ratio=0.1, lr=3e-4)
    job = pad_kd.PadJob("p_dprime", "pad_vpd", "s", "t", "o", 0)
    assert pad_kd.pad_engine_kwargs(job, preset) == {"lr": 3e-4, "grad_accum": 1, "micro_batch": 32, "warmup": 3,
                                                     "grad_clip": TINY.train.grad_clip}
    assert pad_kd.pad_engine_kwargs(job, preset, world=2)["micro_batch"] == 16


# -- the loop ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", PAD_METHODS)
def test_run_mechanics(cast, tmp_path, method):
    """A few updates with the multiple-choice calibration on (α = 0.8): finite curve of the right length,
    the student moved, saved with model.json and pad.json (last); the same seed gives the same curve."""
    student_dir, teacher_dir = cast
    preset = pad_preset(steps=3, batch=6, groups=2)
    job = pad_kd.PadJob("p_dprime_AK", method, student_dir, teacher_dir, str(tmp_path / "out"), seed=7)
    engine = engine_for(job, preset)
    start = {k: v.clone() for k, v in engine.module.lm.state_dict().items()}
    seen = []
    curve = pad_kd.run_pad(job, preset, VOCAB, engine, on_step=seen.append)
    assert [r["step"] for r in curve] == [1, 2, 3] and seen == curve
    for r in curve:
        assert all(math.isfinite(r[k]) for k in ("loss", "teacher_reward_mean", "calibrated_reward_mean",
                                                  "log_p_sel_mean", "student_reward_mean", "agreement"))
        assert r["log_p_sel_mean"] < 0 and r["calibrated_reward_mean"] != r["teacher_reward_mean"]
    assert r["lr"] == pytest.approx(preset.pad.lr)                     # warmup ceil(0.1 · 3) = 1 update
    moved = max(float((engine.module.lm.state_dict()[k] - v).abs().max()) for k, v in start.items())
    assert moved > 1e-4
    assert pad_kd.is_pad_done(job.out_dir)
    info = json.load(open(os.path.join(job.out_dir, "pad.json")))
    assert info["method"] == method and info["steps"] == 3 and info["mcq_format"] == "synthetic"
    assert info["settings"]["groups"] == 2 and len(info["curve"]) == 3 and info["wall_seconds"] > 0
    assert model_info(job.out_dir)["role"] == "p_dprime_AK" and model_info(job.out_dir)["kd_method"] == method
    saved = load_model(job.out_dir)
    for k, v in saved.state_dict().items():
        assert torch.equal(v, engine.module.lm.state_dict()[k])
    again = pad_kd.run_pad(job, preset, VOCAB, engine_for(job, preset))
    assert again == [dict(r, seconds=a["seconds"]) for r, a in zip(curve, again)]


def test_alpha_zero_run_uses_the_teacher_likelihood(cast, tmp_path):
    preset = pad_preset(steps=2, batch=4, alpha=0.0)
    job = pad_kd.PadJob("p_dprime", "pad_vpd", *cast, str(tmp_path / "out"), seed=0)
    curve = pad_kd.run_pad(job, preset, VOCAB, engine_for(job, preset))
    for r in curve:
        assert r["calibrated_reward_mean"] == r["teacher_reward_mean"] and r["log_p_sel_mean"] == 0.0
    assert pad_kd.read_pad_info(job.out_dir)["mcq_format"] == "none (alpha = 0)"


def test_run_with_a_text_tokenizer(text_tokenizer, tmp_path):
    """The text path end to end: a preset whose tokenizer is the local BPE; the teacher reads questions."""
    spec, tok, vocab = text_tokenizer
    preset = get_preset("tiny", tokenizer=spec, pad=dataclasses.replace(TINY.pad, steps=2, batch=2,
                                                                        max_new_tokens=6))
    student = save_model(build_model(TINY.p_dprime, vocab, 0), str(tmp_path / "s"), {"role": "p_dprime"})
    teacher = save_model(build_model(TINY.p_prime, vocab, 1), str(tmp_path / "t"), {"role": "p_prime"})
    job = pad_kd.PadJob("p_dprime", "pad_ppd", student, teacher, str(tmp_path / "out"), seed=0)
    curve = pad_kd.run_pad(job, preset, vocab, engine_for(job, preset, vocab))
    assert len(curve) == 2 and all(math.isfinite(r["loss"]) for r in curve)
    info = pad_kd.read_pad_info(job.out_dir)
    assert info["mcq_format"] == "text" and info["letter_ids"] == list(pad_kd.choice_letter_ids(4, vocab, tok))


@pytest.mark.parametrize("method", PAD_METHODS)
def test_student_learns_the_teachers_ranking(cast, tmp_path, method):
    """Behaviour: on a FIXED held-out batch of 64 prompts × 4 responses (the start student's τ = 0.8 samples,
    from a seed training never uses), Kendall's τ between the student's and the teacher's rewards rises
    after 20 updates (α = 0, so the teacher ranks by its likelihood; the bigram p* ranks strongly).
    Seen with student seeds 0–3: −0.15…0.01 before, 0.18…0.41 after, for both methods."""
    student_dir, teacher_dir = cast
    teacher = pad_kd.TokenLogProbs(load_model(teacher_dir))
    start = pad_kd.TokenLogProbs(load_model(student_dir))
    tokens, lengths = samples(start.lm, 256, seed=1234)
    with torch.no_grad():
        r_tch = pad_kd.response_rewards(teacher, tokens, lengths, 1).view(64, 4)
        before = pad_kd.ranking_agreement(pad_kd.response_rewards(start, tokens, lengths, 1).view(64, 4), r_tch)
    preset = pad_preset(steps=20, batch=16, alpha=0.0, lr=1e-2)
    job = pad_kd.PadJob("p_dprime", method, student_dir, teacher_dir, str(tmp_path / "out"), seed=0)
    engine = engine_for(job, preset)
    pad_kd.run_pad(job, preset, VOCAB, engine)
    with torch.no_grad():
        after = pad_kd.ranking_agreement(pad_kd.response_rewards(engine.module, tokens, lengths, 1).view(64, 4),
                                         r_tch)
    assert after > before + 0.15, (float(before), float(after))
