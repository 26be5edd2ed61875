"""Metrics of the LLM world (paper §4.1, eq. 5–6) and the folded reward (appendix C.3).

A sequence's score under a model is its mean per-token log-likelihood over the generated tokens (those
after the prompt, through EOS when drawn), as the predecessor's evaluate_precision_and_recall does; a
metric is the mean of that over a fixed, recorded number of sequences:

    overall_precision    E_{x~q}[log p*(x)]        q's τ=1 samples scored by p*
    overall_recall       E_{x~p*}[log q(x)]        held-out p* samples scored by q
    target_precision     E_{x~q}[log p_target(x)]  q's samples scored by p_target
    final_average_reward E_{x~q}[R(x)]             R = fold(10·exp(−0.5·NLL_target(x)), τ_r)

τ_r, the folding threshold, is the 90th percentile of R_base over p_target's own samples; it is computed
by the pipeline and stored beside p_target's weights as reward.json.
"""
from __future__ import annotations


import numpy as np
import torch

from adk_ray.columns import METRICS  # noqa: F401 - the keys `model_metrics` returns
from adk_ray.objectives.kd import fold_reward, nll_reward
from adk_ray import storage
from adk_ray.worlds.llm.data import TokenSet, iter_parts, pad_batch
from adk_ray.worlds.llm.models import Vocab, load_model

REWARD_FILE = "reward.json"


@torch.no_grad()
def sequence_logliks(model, data: TokenSet, prompt_length: int, batch_size: int = 64,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Per sequence: mean log q(x_t | x_<t) over generated positions t ≥ prompt_length (float64)."""
    device = next(model.parameters()).device
    rows = np.arange(len(data)) if rows is None else rows
    out = np.empty(len(rows), dtype=np.float64)
    for a in range(0, len(rows), batch_size):
        r = rows[a:a + batch_size]
        lengths = torch.from_numpy(data.lengths[r]).to(device)
        width = int(lengths.max())
        ids = torch.from_numpy(data.tokens[r, :width].astype(np.int64)).to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]       # [B, width-1]
        pos = torch.arange(1, width, device=device)[None, :]
        mask = (pos >= prompt_length) & (pos < lengths[:, None])
        out[a:a + len(r)] = ((logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)).double().cpu().numpy()
    return out


def score_dataset(model_dir: str, data_dir: str, vocab: Vocab, dtype: str = "float32", device: str | None = None,
                  batch_size: int = 64, parts: list[str] | None = None) -> np.ndarray:
    """Pure per-worker scoring: load the model and score a token set (a location) part by part, in (chunk,
    row) order; `parts` (paths from `data.part_files`) restricts it to some parts. Memory holds one part
    and one batch, never the whole set."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(model_dir, dtype=dtype, device=device)
    out = [sequence_logliks(model, pad_batch(table, vocab.pad_id), len(vocab.prompt_ids), batch_size)
           for table in iter_parts(data_dir, parts=parts)]
    return np.concatenate(out) if out else np.zeros(0)


def reward_threshold(target_loglik: np.ndarray, scale: float = 10.0, c: float = 0.5, quantile: float = 0.9) -> float:
    """τ_r: the `quantile` of R_base = scale·exp(−c·NLL) over p_target's own samples (NLL = −loglik)."""
    r = nll_reward(torch.as_tensor(-np.asarray(target_loglik), dtype=torch.float64), scale, c)
    return float(torch.quantile(r, quantile))


def folded_rewards(target_loglik: np.ndarray, threshold: float, scale: float = 10.0, c: float = 0.5) -> np.ndarray:
    """R(x) of each sequence, given its mean log-likelihood under p_target."""
    r = nll_reward(torch.as_tensor(-np.asarray(target_loglik), dtype=torch.float64), scale, c)
    return fold_reward(r, threshold).numpy()


def write_reward_spec(model_dir: str, spec: dict) -> str:
    return storage.write_json_at(storage.join(model_dir, REWARD_FILE), spec)


def read_reward_spec(model_dir: str) -> dict:
    return storage.read_json_at(storage.join(model_dir, REWARD_FILE))


def model_metrics(precision_ll: np.ndarray, recall_ll: np.ndarray, target_ll: np.ndarray, reward: dict) -> dict:
    """The four metric columns of one model from its per-sequence scores (see the module docstring)."""
    return {
        "overall_precision": float(np.mean(precision_ll)),
        "overall_recall": float(np.mean(recall_ll)),
        "target_precision": float(np.mean(target_ll)),
        "final_average_reward": float(np.mean(folded_rewards(target_ll, reward["threshold"], reward["scale"],
                                                              reward["c"]))),
    }
