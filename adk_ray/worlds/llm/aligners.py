"""The LLM world's aligners, one table: ALIGNERS maps each valid `algorithm` name to what it needs.

An entry holds which settings of `presets.AlignSettings` it reads, how a rank's share of a batch and its
micro-batches follow from them, its update (one iteration's optimiser steps on a sampled, scored batch),
the model-selection rule of its curve (`selection.py`), and a line on what it samples. `align.run_align`
runs any of them the same way. Adding an aligner is one entry here: config validation, the pipeline, the
selection record and docs read the keys.

Why these updates are written here and not with TRL's trainers:
  * TRL 1.16 has no PPOTrainer (the paper used TRL 0.9.6's, which TRL removed); PPO below follows that
    trainer's step: per-token KL-shaped rewards, GAE, whitened advantages, clipped policy and value losses.
  * the paper's on-policy DPO schedule (128 samples → 64 pairs → 16 updates per batch) is not TRL's
    OnlineDPOTrainer (one update per generation, pairs judged per prompt);
  * TRL trainers own the process group and their DeepSpeed engine through accelerate, while our stages
    run inside Ray Train workers on the engine interface they share with distillation;
  * the tiny world's synthetic vocabulary has no text tokenizer, which TRL's data collators need.
The losses themselves are the shared objectives of `adk_ray.objectives` (also used by the MoG world).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from adk_ray.objectives.dpo import dpo_logits, dpo_loss, ipo_loss
from adk_ray.objectives.rl import (clipped_value_loss, gae, grpo_advantage, grpo_token_loss, masked_mean,
                                   masked_whiten, ppo_clipped_loss, ppo_token_rewards)
from adk_ray.worlds.llm.data import read_tokens
from adk_ray.worlds.llm.models import Vocab
from adk_ray.worlds.llm.presets import AlignSettings, GRPOSettings, PairSettings, PPOSettings
from adk_ray.worlds.llm.responses import cycled_order, label_pairs, mean_of, response_mask, take, token_logprobs
from adk_ray.worlds.llm.selection import select_by_rule


@dataclass
class Batch:
    """One iteration of a run: the rank's sampled responses, their scores, and what an update steps."""

    engine: Any
    """The optimiser engine over the `align.AlignModule` (`engine(ids)`, `.backward`, `.step`)."""
    s: Any
    """The aligner's own settings (`Aligner.settings_of`)."""
    beta: float
    """KL coefficient (PPO, GRPO) or the pair losses' β."""
    micro: int
    """Responses (PPO, GRPO) or pairs (DPO, IPO) per micro-batch on this rank."""
    prompt_len: int
    """Tokens of the prompt at the start of every row."""
    ids: Tensor
    """[B, W] the rank's responses, padded after EOS."""
    lengths: Tensor
    """[B] tokens of each row through EOS."""
    mask: Tensor
    """[B, W−1] response-token mask (`responses.response_mask`)."""
    scores: Tensor
    """[B] folded reward R(y)."""
    target_ll: Tensor
    """[B] mean log p_target over each response."""
    old_logp: Tensor
    """[B, W−1] log π_old, the sampling policy, of every next token."""
    old_values: Tensor | None
    """[B, W−1] V_old of the value head (PPO), else None."""
    ref_logp: Tensor
    """[B, W−1] log π_ref of every next token."""
    rng: np.random.Generator
    """Shuffles of this (seed, iteration, rank)."""
    iteration: int
    """1-based iteration."""
    rank: int
    world: int
    pool: "PairPool | None" = None
    """Off-policy pair aligners: the static pairs."""


# ------------------------------------------------------------------------------------------------ PPO

def ppo_update(b: Batch) -> dict:
    """PPO on one sampled batch, as TRL 0.9.6's PPOTrainer.step (the paper's trainer):

        r_t  = −β (log π_old − log π_ref)_t + R(y)·1[t = last]           (ppo_token_rewards)
        Â, R̂ = GAE(γ, λ) of r over the response tokens, V_old zeroed outside; R̂ = Â + V_old
        Â    ← whiten(Â) over the rank's valid tokens
        loss = masked_mean(−min(ρÂ, clip(ρ, 1±ε)Â)) + vf_coef · masked_mean(½ max((V−R̂)², (V_clip−R̂)²))

    over `epochs` passes of shuffled mini-batches of `micro` responses, one optimiser step each. β is
    fixed (TRL's adaptive KL controller is off: the paper sweeps β as a fixed coefficient), and TRL's
    safety net that zeroes a mini-batch's loss when its mean ratio exceeds ratio_threshold=10 is left out.
    """
    s, engine, ids, lengths = b.s, b.engine, b.ids, b.lengths
    n, mask = ids.shape[0], b.mask
    with torch.no_grad():
        values = b.old_values * mask              # TRL: values and rewards are zeroed outside the response
        rewards = ppo_token_rewards(b.scores, b.old_logp, b.ref_logp, mask, b.beta)
        advantages, returns = gae(rewards, values, s.gamma, s.lam)
        advantages = masked_whiten(advantages, mask)
    losses, pg_losses, vf_losses, clipfracs = [], [], [], []
    for _ in range(s.epochs):
        order = torch.from_numpy(b.rng.permutation(n)).to(ids.device)
        for a in range(0, n, b.micro):
            rows = order[a:a + b.micro]
            x, m, w = take(ids, lengths, rows, b.prompt_len)
            logp, v = engine(x)
            adv, lp_old = advantages[rows, :w - 1], b.old_logp[rows, :w - 1]
            pg = masked_mean(ppo_clipped_loss(logp, lp_old, adv, s.clip), m)
            vf = masked_mean(clipped_value_loss(v, values[rows, :w - 1], returns[rows, :w - 1], s.clip), m)
            loss = pg + s.vf_coef * vf
            engine.backward(loss)
            engine.step()
            with torch.no_grad():           # kept on the device: one host sync per iteration, not per update
                ratio = torch.exp(logp - lp_old)
                clipfracs.append(masked_mean(((ratio - 1).abs() > s.clip).float(), m))
                losses.append(loss.detach())
                pg_losses.append(pg.detach())
                vf_losses.append(vf.detach())
    return {"loss": mean_of(losses), "pg_loss": mean_of(pg_losses), "vf_loss": mean_of(vf_losses),
            "clipfrac": mean_of(clipfracs)}


# ----------------------------------------------------------------------------------------------- GRPO

def grpo_update(b: Batch) -> dict:
    """GRPO on one sampled batch (Shao et al. 2024; the paper's critic-free aligner, §3.4 and appendix A.2):

        A_i  = R_i − mean_group R (÷ std_group R if std_normalize), groups of `group` consecutive
               responses, the same A_i at every token of response i
        ℓ_t  = −min(ρ_t A, clip(ρ_t, 1±ε) A) + β·k3(π_θ, π_ref)_t,  ρ_t = π_θ/π_old
        loss = masked mean of ℓ over the mini-batch's response tokens

    one pass over shuffled mini-batches of `micro` responses; π_old is the sampling policy (its log-probs
    from a no-grad pass before the first update), so ρ = 1 on the first mini-batch and the clip acts on
    the later ones. Token-level normalisation (every response token weighs the same) is TRL 1.16's
    default loss_type ('dapo'); the original GRPO averages per sequence first. TRL's GRPOTrainer also
    generates per prompt of a text dataset, while every response here answers "The".
    """
    s, engine, ids, lengths = b.s, b.engine, b.ids, b.lengths
    n = ids.shape[0]
    advantages = grpo_advantage(b.scores.reshape(-1, s.group), s.std_normalize).reshape(n)
    losses = []
    order = torch.from_numpy(b.rng.permutation(n)).to(ids.device)
    for a in range(0, n, b.micro):
        rows = order[a:a + b.micro]
        x, m, w = take(ids, lengths, rows, b.prompt_len)
        logp, _ = engine(x)
        per_token = grpo_token_loss(logp, b.old_logp[rows, :w - 1], b.ref_logp[rows, :w - 1],
                                    advantages[rows][:, None], b.beta, s.clip)
        loss = masked_mean(per_token, m)
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach())
    return {"loss": mean_of(losses)}


# ------------------------------------------------------------------------------- preference pairs

PairLoss = Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor]
"""loss(log π_θ(y_w), log π_θ(y_l), log π_ref(y_w), log π_ref(y_l), β), per pair (objectives.dpo)."""


def pair_updates(engine, ids: Tensor, lengths: Tensor, prompt_len: int, chosen: Tensor, rejected: Tensor,
                 ref_seq: Tensor, beta: float, s: PairSettings, rng: np.random.Generator, loss_fn: PairLoss) -> dict:
    """Preference-pair updates on one set of pairs (appendix C.3's schedule), with DPO's loss (Rafailov et
    al. 2023, eq. 7) or IPO's (Azar et al. 2023, eq. 17):

        log π(y) = Σ_t log π(y_t | y_<t) over the response tokens (prompt masked, as TRL's labels −100)
        h        = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))
        loss     = mean over the micro-batch of −log σ(βh) (DPO) or (h − 1/(2β))² (IPO)

    `updates` optimiser updates, each of `grad_accum` micro-batches of `mini_batch` pairs (chosen and
    rejected in one forward, as TRL's concatenated_forward), cycling through the pairs in a shuffled
    order (`cycled_order`). `chosen`/`rejected` index rows of ids; `ref_seq` is log π_ref of every row.
    Logged as TRL does for both losses: margin = mean βh, accuracy = mean 1[h > 0], reward_chosen/rejected
    = mean β·(log π − log π_ref) of y_w / y_l, averaged over the iteration's micro-batches.
    """
    mb = s.mini_batch
    order = cycled_order(len(chosen), s.updates * s.grad_accum * mb, rng)
    stats = {"loss": [], "margin": [], "accuracy": [], "reward_chosen": [], "reward_rejected": []}
    for u in range(s.updates * s.grad_accum):              # micro-batches; the engine steps every GA
        pairs = torch.from_numpy(order[u * mb:(u + 1) * mb]).to(ids.device)
        w_rows, l_rows = chosen[pairs], rejected[pairs]
        x, m, _ = take(ids, lengths, torch.cat([w_rows, l_rows]), prompt_len)
        logp, _ = engine(x)
        seq = (logp * m).sum(-1)
        logp_w, logp_l = seq[:len(pairs)], seq[len(pairs):]
        ref_w, ref_l = ref_seq[w_rows], ref_seq[l_rows]
        loss = loss_fn(logp_w, logp_l, ref_w, ref_l, beta).mean()
        engine.backward(loss)
        engine.step()
        with torch.no_grad():
            z = dpo_logits(logp_w, logp_l, ref_w, ref_l, beta)
            stats["loss"].append(loss.detach())
            stats["margin"].append(z.mean())
            stats["accuracy"].append((z > 0).float().mean())
            stats["reward_chosen"].append((beta * (logp_w - ref_w)).mean())
            stats["reward_rejected"].append((beta * (logp_l - ref_l)).mean())
    return {k: mean_of(v) for k, v in stats.items()}


def online_pair_update(loss_fn: PairLoss, b: Batch) -> dict:
    """On-policy pairs: the iteration's own responses, rows (2i, 2i+1) one pair, labelled by p_target."""
    chosen, rejected = label_pairs(b.target_ll)
    ref_seq = (b.ref_logp * b.mask).sum(-1)
    return pair_updates(b.engine, b.ids, b.lengths, b.prompt_len, chosen, rejected, ref_seq, b.beta, b.s, b.rng,
                        loss_fn)


def offline_pair_update(loss_fn: PairLoss, b: Batch) -> dict:
    """Off-policy pairs: the iteration's slice of the static pool (`offline_pairs`); the iteration's own
    samples only feed the curve's reward and KL."""
    pool = b.pool
    k = offline_pairs(b.iteration, b.rank, b.world, b.s.responses // 2, pool.n_pairs).to(b.ids.device)
    return pair_updates(b.engine, pool.ids, pool.lengths, b.prompt_len, pool.chosen[k], pool.rejected[k],
                        pool.ref_seq, b.beta, b.s, b.rng, loss_fn)


class PairPool(NamedTuple):
    """Off-policy pairs: rows (2i, 2i+1) of `ids` are pair i, labelled once by p_target."""

    ids: Tensor
    lengths: Tensor
    chosen: Tensor
    rejected: Tensor
    ref_seq: Tensor

    @property
    def n_pairs(self) -> int:
        return len(self.chosen)


def load_pair_pool(pairs_dir: str, s: PairSettings, vocab: Vocab, ref: nn.Module, target: nn.Module,
                   device: torch.device) -> PairPool:
    """The first 2·offline_pairs rows of `pairs_dir` (π_ref's samples, made by the pipeline), labelled by
    p_target and scored by π_ref once, up front."""
    data = read_tokens(pairs_dir, vocab.pad_id)
    need = 2 * s.offline_pairs
    if len(data) < need:
        raise ValueError(f"{pairs_dir} has {len(data)} sequences; an off-policy pair aligner needs {need}")
    prompt = tuple(data.meta.get("prompt_ids", vocab.prompt_ids))
    if prompt != tuple(vocab.prompt_ids):
        raise ValueError(f"{pairs_dir} was sampled from prompt {prompt}, not {vocab.prompt_ids}")
    lengths = torch.from_numpy(data.lengths[:need].astype(np.int64)).to(device)
    ids = torch.from_numpy(data.tokens[:need, :int(lengths.max())].astype(np.int64)).to(device)
    mask = response_mask(lengths, ids.shape[1], len(vocab.prompt_ids))
    chosen, rejected = label_pairs(masked_mean(token_logprobs(target, ids), mask, dim=-1))
    return PairPool(ids, lengths, chosen, rejected, (token_logprobs(ref, ids) * mask).sum(-1))


def offline_pairs(iteration: int, rank: int, world: int, per_iteration: int, n_pairs: int) -> Tensor:
    """Pair indices rank `rank` trains on at `iteration` (1-based): the iteration's global slice is the
    next `per_iteration` pairs of the pool, wrapping around; each rank takes a contiguous share."""
    share = per_iteration // world
    start = (iteration - 1) * per_iteration + rank * share
    return torch.arange(start, start + share) % n_pairs


# ------------------------------------------------------------------------------- per-rank shares

class Shares(NamedTuple):
    """How one rank splits an iteration."""

    per_rank: int
    """Responses it samples."""
    micro: int
    """Responses (PPO, GRPO) or pairs (DPO, IPO) per micro-batch."""
    grad_accum: int
    """Micro-batches per optimiser update."""


def sampled_shares(s: PPOSettings | GRPOSettings, world: int) -> Shares:
    """Each rank samples batch // world responses; an update reads mini_batch // world of them per rank (at
    least 1), so a DeepSpeed step that averages gradients over ranks sees the global mini-batch the
    paper names."""
    if s.batch % world:
        raise ValueError(f"batch {s.batch} is not divisible by {world} workers")
    return Shares(s.batch // world, max(1, s.mini_batch // world), 1)


def group_shares(s: GRPOSettings, world: int) -> Shares:
    """`sampled_shares`, and every rank's responses split into whole groups."""
    shares = sampled_shares(s, world)
    if shares.per_rank % s.group:
        raise ValueError(f"{shares.per_rank} responses per worker do not split into groups of {s.group}")
    return shares


def pair_shares(s: PairSettings, world: int) -> Shares:
    """Each rank samples responses // world responses (whole pairs); the mini-batch and accumulation are
    per device already (the paper: per-device 4 pairs × 2 accumulation steps), so they are not divided."""
    if s.responses % world:
        raise ValueError(f"batch {s.responses} is not divisible by {world} workers")
    if (s.responses // world) % 2:
        raise ValueError(f"{s.responses // world} responses per worker do not pair up")
    return Shares(s.responses // world, s.mini_batch, s.grad_accum)


# ---------------------------------------------------------------------------------------------- table

@dataclass(frozen=True)
class Aligner:
    """One entry of ALIGNERS."""

    settings: str
    """The field of `AlignSettings` this aligner reads (its settings dataclass)."""
    shares: Callable[[Any, int], Shares]
    """(settings, world size) -> a rank's share of each iteration, after checking the settings."""
    update: Callable[[Batch], dict]
    """One iteration's updates on a sampled, scored batch -> that iteration's loss statistics."""
    rule: str
    """Model selection over its curve: a key of `selection.RULES` (appendix C.4)."""
    samples: str
    """What it samples and trains on each iteration (for docs and listings)."""
    value_head: bool = False
    """Trains a value head on the policy's last hidden state (PPO's critic)."""
    offline: bool = False
    """Trains on a static pair set sampled from π_ref once (the pipeline makes it: `AlignJob.pairs_dir`)."""
    rule_note: str = ""
    """Why a rule was borrowed, prefixed to the selection's reason."""

    def settings_of(self, align: AlignSettings):
        return getattr(align, self.settings)


ALIGNERS: dict[str, Aligner] = {
    "ppo": Aligner("ppo", sampled_shares, ppo_update, "reward_before_std_drop",
                   "batch responses from π_old; KL-shaped token rewards, GAE, clipped surrogate", value_head=True),
    "dpo_online": Aligner("dpo", pair_shares, partial(online_pair_update, dpo_loss), "max_margin",
                          "responses from π_θ, paired and labelled by p_target"),
    "dpo_offline": Aligner("dpo", pair_shares, partial(offline_pair_update, dpo_loss), "max_margin",
                           "pairs of a static π_ref set (responses from π_θ only for the curve)", offline=True),
    "grpo": Aligner("grpo", group_shares, grpo_update, "reward_before_std_drop",
                    "batch responses from π_θ in groups; group-mean baseline, k3 KL to π_ref",
                    rule_note="PPO's rule (the paper gives none for GRPO): "),
    # IPO (Azar et al. 2023, eq. 17): DPO's pairs and schedule, the squared loss (h − 1/(2β))².
    "ipo_online": Aligner("dpo", pair_shares, partial(online_pair_update, ipo_loss), "max_margin",
                          "responses from π_θ, paired and labelled by p_target",
                          rule_note="DPO's rule (the paper has no IPO run): "),
    "ipo_offline": Aligner("dpo", pair_shares, partial(offline_pair_update, ipo_loss), "max_margin",
                           "pairs of a static π_ref set (responses from π_θ only for the curve)", offline=True,
                           rule_note="DPO's rule (the paper has no IPO run): "),
}


def aligner(algorithm: str) -> Aligner:
    """The table entry of `algorithm`, or a one-line error listing the valid names."""
    if algorithm not in ALIGNERS:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: {', '.join(ALIGNERS)}")
    return ALIGNERS[algorithm]


def rank_shares(algorithm: str, s: AlignSettings, world: int) -> Shares:
    """A rank's share of an iteration of `algorithm` with these settings, on `world` ranks."""
    a = aligner(algorithm)
    try:
        return a.shares(a.settings_of(s), world)
    except ValueError as e:
        raise ValueError(f"{algorithm}: {e}") from None


def select_checkpoint(algorithm: str, curve: list[dict], checkpoint_steps: Sequence[int],
                      settings: AlignSettings) -> tuple[int, str]:
    """(selected step, a human-readable reason) for a run of `algorithm`: its rule over the curve and the
    saved checkpoints (`selection.select_by_rule`)."""
    a = aligner(algorithm)
    step, reason = select_by_rule(a.rule, curve, checkpoint_steps, settings)
    return step, a.rule_note + reason
