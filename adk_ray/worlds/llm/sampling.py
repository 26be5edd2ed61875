"""The sampling stage: a teacher writes sequences from the prompt "The" at temperature τ (top_p 1.0).

`decode` is a batched decode loop over a transformers `StaticCache`: fixed shapes every step, so the
one-token step can be `torch.compile`d with CUDA graphs (`mode="reduce-overhead"`) on a GPU; on CPU it
runs eagerly. Sampling uses the exponential race (argmax p_i / E_i, E_i ~ Exp(1), an exact draw from p)
with an explicit generator: no host sync per step, and the same seed gives the same tokens.

Work is cut into fixed chunks of `chunk_size` sequences, each with a generator seeded by (seed, chunk),
so a data set is identical however many workers (Ray tasks) share the chunks. `sample_shard` is the pure
per-worker function: load the model, draw some chunks, write one Parquet part per chunk as it goes.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm.models import Vocab, load_model, model_info


def chunk_seed(seed: int, chunk: int) -> int:
    """A 63-bit seed for chunk `chunk` of a set drawn with `seed` (independent streams per chunk)."""
    hi, lo = np.random.SeedSequence([int(seed), int(chunk)]).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


def num_chunks(n: int, chunk_size: int) -> int:
    return math.ceil(n / chunk_size)


def chunk_sizes(n: int, chunk_size: int) -> list[int]:
    """Sequences per chunk: full chunks and a last partial one."""
    k = num_chunks(n, chunk_size)
    return [min(chunk_size, n - i * chunk_size) for i in range(k)]


def split_chunks(n_chunks: int, n_workers: int) -> list[list[int]]:
    """Contiguous, balanced chunk ranges per worker (empty workers dropped)."""
    bounds = np.linspace(0, n_chunks, n_workers + 1).round().astype(int)
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def next_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One draw per row from softmax(logits / τ), restricted to the top-p nucleus when top_p < 1."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > top_p          # the most likely token always stays
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / race).argmax(dim=-1)


class Decoder:
    """Batched sampling from one model with a static KV cache; optionally a compiled decode step.

    One Decoder serves many `decode` calls of the same batch size (the cache is reused, so a compiled
    step is captured once).
    """

    def __init__(self, model, batch_size: int, max_len: int, compile: bool = False):
        from transformers import StaticCache
        self.model, self.batch_size, self.max_len = model, batch_size, max_len
        self.device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        self._step = self._forward
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._step = torch.compile(self._forward, mode=mode, fullgraph=True, dynamic=False)

    def _forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # transformers 5.24 (the pinned range): the cache is passed as `cache=` (the `past_key_values=`
        # name is deprecated) and tracks its own write position (`cumulative_length`, reset by
        # `cache.reset()`); positions follow from it, and a `cache_position` argument is silently ignored.
        out = self.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    @torch.no_grad()
    def decode(self, prompt_ids: tuple[int, ...], max_new_tokens: int, temperature: float, top_p: float,
               generator: torch.Generator, eos_id: int, pad_id: int, return_logprobs: bool = False,
               stop_check_every: int = 32):
        """Sample `batch_size` continuations of `prompt_ids`.

        Returns tokens [B, P + max_new_tokens] (pad after each row's EOS), lengths [B] (prompt + generated
        through EOS) and, with return_logprobs, the τ=1 log-probabilities [B, max_new_tokens] of the drawn
        tokens under the model (0 after EOS), which tests compare against a teacher-forced forward pass.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        P, B = len(prompt_ids), self.batch_size
        if P + max_new_tokens > self.max_len:
            raise ValueError(f"prompt {P} + {max_new_tokens} new tokens exceed the cache length {self.max_len}")
        self.cache.reset()
        dev = self.device
        prompt = torch.tensor(prompt_ids, device=dev, dtype=torch.long).expand(B, P).contiguous()
        logits = self._forward(prompt)                  # the prompt in one pass (never the compiled step)
        new = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
        logps = torch.zeros((B, max_new_tokens), dtype=torch.float32, device=dev) if return_logprobs else None
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        n_new = torch.zeros(B, dtype=torch.long, device=dev)
        for t in range(max_new_tokens):
            tok = next_token(logits, temperature, top_p, generator)
            if logps is not None:
                lp = torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None])[:, 0]
                logps[:, t] = torch.where(done, 0.0, lp)
            tok = torch.where(done, pad_id, tok)
            new[:, t] = tok
            n_new += (~done).long()
            done |= tok == eos_id
            if t + 1 == max_new_tokens or ((t + 1) % stop_check_every == 0 and bool(done.all())):
                break
            logits = self._step(tok[:, None])
        tokens = torch.cat([prompt, new], dim=1)
        return tokens, n_new + P, logps


def iter_chunks(model, vocab: Vocab, chunks: list[int], n_total: int, chunk_size: int, max_new_tokens: int,
                temperature: float, top_p: float, seed: int, compile: bool = False):
    """Draw the given chunks of an n_total-sequence set one at a time: yields (chunk id, sequences trimmed
    after EOS). Decoders (and a compiled step) are built once per chunk size and reused."""
    sizes = chunk_sizes(n_total, chunk_size)
    dev = next(model.parameters()).device
    decoders: dict[int, Decoder] = {}
    for c in chunks:
        b = sizes[c]
        if b not in decoders:
            decoders[b] = Decoder(model, b, len(vocab.prompt_ids) + max_new_tokens, compile=compile)
        gen = torch.Generator(device=dev)
        gen.manual_seed(chunk_seed(seed, c))
        tokens, lengths, _ = decoders[b].decode(vocab.prompt_ids, max_new_tokens, temperature, top_p, gen,
                                                vocab.eos_id, vocab.pad_id)
        tokens, lengths = tokens.cpu().numpy().astype(np.int32), lengths.cpu().numpy()
        yield c, [tokens[i, :lengths[i]] for i in range(b)]


def sample_chunks(model, vocab: Vocab, chunks: list[int], n_total: int, chunk_size: int, max_new_tokens: int,
                  temperature: float, top_p: float, seed: int, compile: bool = False,
                  on_chunk: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Draw the given chunks of an n_total-sequence set: (sequences trimmed after EOS, chunk ids, row ids)."""
    seqs, chunk_col, row_col = [], [], []
    for c, drawn in iter_chunks(model, vocab, chunks, n_total, chunk_size, max_new_tokens, temperature, top_p,
                                seed, compile):
        seqs.extend(drawn)
        chunk_col.extend([c] * len(drawn))
        row_col.extend(range(len(drawn)))
        if on_chunk:
            on_chunk(len(drawn))
    return seqs, chunk_col, row_col


def dataset_meta(model_dir: str, vocab: Vocab, n: int, temperature: float, top_p: float, seed: int,
                 max_new_tokens: int, chunk_size: int) -> dict:
    """What a sampled set records about itself (schema metadata of every part and dataset.json)."""
    info = model_info(model_dir)
    return {"generator": info.get("model_id", model_dir), "generator_role": info.get("role"),
            "temperature": float(temperature), "top_p": float(top_p), "seed": int(seed), "num_samples": int(n),
            "max_new_tokens": int(max_new_tokens), "chunk_size": int(chunk_size),
            "prompt_ids": list(vocab.prompt_ids), "eos_id": vocab.eos_id, "preset": info.get("preset")}


def sample_shard(model_dir: str, out_dir: str, vocab: Vocab, chunks: list[int], n_total: int, chunk_size: int,
                 max_new_tokens: int, temperature: float, top_p: float, seed: int, dtype: str = "float32",
                 device: str | None = None, compile: bool = False) -> list[int]:
    """One worker's share of a sampling stage: load the model and draw each of `chunks` that has no part
    yet, writing its part (`data.part_name`) as soon as it is drawn. A worker killed mid-stage loses at
    most the chunk it was drawing; a re-run skips the rest. `out_dir` and `model_dir` are locations (local
    paths or URIs). Pure (no Ray): the service runs it as a Ray task per GPU / CPU process, the local
    backend directly. Returns the chunks it drew."""
    done = token_data.finished_chunks(out_dir)
    todo = [c for c in chunks if c not in done]
    if not todo:
        return []
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(model_dir, dtype=dtype, device=device)
    meta = dataset_meta(model_dir, vocab, n_total, temperature, top_p, seed, max_new_tokens, chunk_size)
    for c, seqs in iter_chunks(model, vocab, todo, n_total, chunk_size, max_new_tokens, temperature, top_p, seed,
                               compile):
        token_data.write_part(out_dir, token_data.part_name(c), seqs, [c] * len(seqs), list(range(len(seqs))), meta)
    return todo
