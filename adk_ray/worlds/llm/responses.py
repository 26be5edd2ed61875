"""The pure pieces every LLM aligner reads (paper appendix C.3): which tokens of a sampled batch are the
response, their log-probabilities under a model, the folded reward, preference pairs and shuffles.
No optimiser and no process group here; `aligners.py` builds the updates from them, `align.py` the loop.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from adk_ray.objectives.kd import fold_reward, nll_reward
from adk_ray.worlds.llm.models import Vocab
from adk_ray.worlds.llm.presets import AlignSettings
from adk_ray.worlds.llm.sampling import Decoder

SCORE_ROWS = 64     # rows per no-grad scoring forward: bounds the [rows, T, vocab] logits at full vocab


def response_mask(lengths: Tensor, width: int, prompt_len: int) -> Tensor:
    """m[b, t] = 1 where token t+1 of row b is a response token: prompt_len ≤ t+1 < lengths[b] (the
    generated tokens through EOS; the prompt and the padding after EOS are 0). Float [B, width−1], aligned
    with the next-token log-probabilities of a forward pass over [B, width]."""
    pos = torch.arange(1, width, device=lengths.device)[None, :]
    return ((pos >= prompt_len) & (pos < lengths[:, None])).float()


@torch.no_grad()
def token_logprobs(model: nn.Module, ids: Tensor, rows: int = SCORE_ROWS) -> Tensor:
    """log q(x_{t+1} | x_≤t) [B, L−1] in fp32 of a causal LM (transformers), in chunks of `rows` rows."""
    out = []
    for a in range(0, ids.shape[0], rows):
        x = ids[a:a + rows]
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
        out.append(torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[..., 0])
    return torch.cat(out)


@torch.no_grad()
def module_logprobs(module: nn.Module, ids: Tensor, rows: int = SCORE_ROWS) -> tuple[Tensor, Tensor | None]:
    """`module(ids)` without gradients, in chunks of `rows` rows: the sampling policy's log-probs (and values)."""
    logps, values = [], []
    for a in range(0, ids.shape[0], rows):
        lp, v = module(ids[a:a + rows])
        logps.append(lp)
        values.append(v)
    return torch.cat(logps), (torch.cat(values) if values[0] is not None else None)


def folded_reward(target_loglik: Tensor, reward: dict) -> Tensor:
    """R(y) = fold(scale·exp(−c·NLL), τ_r), NLL = −mean log p_target over the response (appendix C.3,
    eq. 9–10; the same numbers as metrics.folded_rewards)."""
    base = nll_reward(-target_loglik.double(), float(reward["scale"]), float(reward["c"]))
    return fold_reward(base, float(reward["threshold"])).float()


def label_pairs(target_loglik: Tensor) -> tuple[Tensor, Tensor]:
    """Pairs (2i, 2i+1): (chosen, rejected) row indices, chosen = the lower NLL under p_target (appendix
    C.3's labelling); on an exact tie the first of the pair is chosen."""
    first = torch.arange(0, target_loglik.shape[0] - 1, 2, device=target_loglik.device)
    second = first + 1
    first_wins = target_loglik[first] >= target_loglik[second]
    return torch.where(first_wins, first, second), torch.where(first_wins, second, first)


def cycled_order(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` indices into range(n): a fresh shuffle of range(n) after another, so every pair is used
    as evenly as the update count allows (16 updates × 8 pairs = two passes over 64 pairs)."""
    reps = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]


def take(ids: Tensor, lengths: Tensor, rows: Tensor, prompt_len: int) -> tuple[Tensor, Tensor, int]:
    """Rows `rows` cut to their longest sequence: (ids [b, w], response mask [b, w−1], w)."""
    width = int(lengths[rows].max())
    return ids[rows, :width], response_mask(lengths[rows], width, prompt_len), width


def sample_responses(decoder: Decoder, vocab: Vocab, s: AlignSettings, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor]:
    """The policy's responses to the prompt: (ids [B, W] padded after EOS, lengths [B]), W the longest.
    top_p = 1 (the paper's plain temperature sampling); no compiled step, since the weights move between
    calls."""
    ids, lengths, _ = decoder.decode(vocab.prompt_ids, s.max_new_tokens, s.temperature, 1.0, generator,
                                     vocab.eos_id, vocab.pad_id)
    return ids[:, :int(lengths.max())], lengths


def mean_of(values: list[Tensor]) -> float:
    """The mean of per-update scalars, read back to the host once."""
    return float(torch.stack(values).float().mean())
