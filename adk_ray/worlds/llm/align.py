"""The LLM world's aligners (paper §4.2, appendix C.3): PPO with a value head, on-policy DPO,
off-policy DPO and GRPO, as one Ray-free loop over an optimiser engine (`engine.py`).

Every algorithm shares one iteration:

    1. the policy samples its rank's share of responses to the prompt ("The") at align.temperature, up
       to align.max_new_tokens tokens, with a generator seeded by (seed, iteration, rank);
    2. p_target scores them: R(y) = fold(10·exp(−0.5·NLL_target(y)), τ_r), NLL the mean over the
       response tokens (through EOS) exactly as `metrics.sequence_logliks`;
    3. π_ref (a frozen copy of the start policy) and the sampling policy score every response token;
    4. the algorithm's updates, each `engine(ids)` → `engine.backward(loss)` → `engine.step()`;
    5. one curve point: reward mean/std over the GLOBAL batch, sequence KL to π_ref, the loss, and
       DPO's margin and accuracy; rank 0 saves the policy every align.checkpoint_every iterations, and
       then every rank may save the run's resume state (`save_align_state`: engine, step, curve, random
       states), from which `run_align(start=..., curve=...)` continues bit-identically.

All losses are over response tokens only: the prompt and everything after EOS are masked.

Why this is written here and not with TRL's trainers, for every algorithm:
  * TRL 1.16 has no PPOTrainer (the paper used TRL 0.9.6's, which TRL removed); PPO below follows that
    trainer's step: per-token KL-shaped rewards, GAE, whitened advantages, clipped policy and value losses.
  * the paper's on-policy DPO schedule (128 samples → 64 pairs → 16 updates per batch) is not TRL's
    OnlineDPOTrainer (one update per generation, pairs judged per prompt);
  * TRL trainers own the process group and their DeepSpeed engine through accelerate, while our stages
    run inside Ray Train workers on the engine interface they share with distillation;
  * the tiny world's synthetic vocabulary has no text tokenizer, which TRL's data collators need.
The losses themselves are the shared objectives of `adk_ray.objectives` (also used by the MoG world),
which the tests check against TRL's loss functions where TRL still has them.

Choices the paper leaves open, each explained where it is made: the value head (zero-initialised Linear
on the last hidden state, no dropout), fixed β (no adaptive KL controller), PPO without gradient clipping
(TRL 0.9.6's default) and DPO/GRPO with clip 1.0 (HF Trainer's), per-rank shares of each batch, GRPO's
token-level loss normalisation, DPO tie-breaking and off-policy DPO's monitoring samples. Every loss
uses the model's own (τ = 1) log-probabilities, as TRL 0.9.6 did; the paper samples at τ = 1, so they are
the sampling distribution's (at another align.temperature the samples would be slightly off-policy).
"""
from __future__ import annotations

import copy
import json
import os
import random
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from adk_ray.objectives.dpo import dpo_logits, dpo_loss
from adk_ray.objectives.kd import fold_reward, nll_reward
from adk_ray.objectives.rl import (clipped_value_loss, gae, grpo_advantage, grpo_token_loss, masked_mean,
                                   masked_whiten, ppo_clipped_loss, ppo_token_rewards)
from adk_ray.storage import write_json
from adk_ray.worlds.llm.data import read_tokens
from adk_ray.worlds.llm.models import MODEL_INFO, Vocab, load_model, save_model
from adk_ray.worlds.llm.presets import AlignSettings
from adk_ray.worlds.llm.sampling import Decoder
from adk_ray.worlds.llm.selection import select_checkpoint, selection_rule

ALGORITHMS = ("ppo", "dpo_online", "dpo_offline", "grpo")
ALIGN_FILE = "align.json"
CURVE_FILE = "curve.json"
STATE_FILE = "align_state.json"
SCORE_ROWS = 64     # rows per no-grad scoring forward: bounds the [rows, T, vocab] logits at full vocab


@dataclass(frozen=True)
class AlignJob:
    """One alignment run: `algorithm` with coefficient `beta` for `iterations`, from `policy_dir`."""

    role: str
    """The aligned model's role, e.g. 'p_dprime_KA' or 'p_prime_AK' (written into each checkpoint's model.json)."""
    algorithm: str
    """One of ALGORITHMS: 'ppo', 'dpo_online', 'dpo_offline', 'grpo'."""
    beta: float
    """KL coefficient (PPO, GRPO) or DPO's β."""
    iterations: int
    """Iterations to run (one sampled batch and its updates each)."""
    policy_dir: str
    """The start model, which is also π_ref (a `save_model` directory)."""
    target_dir: str
    """p_target: R(y) = fold(scale·exp(−c·NLL_target(y)), threshold)."""
    reward: dict
    """{"threshold": τ_r, "scale": 10.0, "c": 0.5} (metrics.read_reward_spec of p_target)."""
    out_dir: str
    """Checkpoints (ckpt-NNNNNN/), curve.json and align.json go here."""
    seed: int
    """Drives every draw of the run (sampling, shuffles); the same seed gives the same curve."""
    pairs_dir: str = ""
    """dpo_offline only: a finished token set of π_ref samples with >= 2·dpo_offline_pairs rows; rows
    (2i, 2i+1) are pair i."""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.algorithm == "dpo_offline" and not self.pairs_dir:
            raise ValueError("dpo_offline needs pairs_dir (a token set of π_ref samples)")
        missing = {"threshold", "scale", "c"} - set(self.reward)
        if missing:
            raise ValueError(f"reward spec lacks {', '.join(sorted(missing))}")


class AlignModule(nn.Module):
    """The trained module: a causal LM `policy` and, for PPO, a value head `v_head` on its last hidden
    state (TRL's AutoModelForCausalLMWithValueHead: actor and critic share the trunk).

    forward(input_ids [B, L]) → (log π(x_{t+1} | x_≤t) [B, L−1] in fp32, V(x_≤t) [B, L−1] or None).

    The value head is a Linear(hidden, 1) initialised to zero (TRL: torch's default init and dropout 0.1):
    V ≡ 0 at the start, so the first advantages are plain reward-to-go, and since ∂V/∂h = w = 0 the
    value loss sends no gradient into the shared trunk until the head has learnt something. No dropout,
    so the sampling pass and the update pass see the same values.
    """

    def __init__(self, policy: nn.Module, value_head: bool):
        super().__init__()
        self.policy = policy
        self.v_head = nn.Linear(policy.config.hidden_size, 1) if value_head else None
        if self.v_head is not None:
            nn.init.zeros_(self.v_head.weight)
            nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        hidden = self.policy.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1]
        logits = self.policy.get_output_embeddings()(hidden).float()
        logp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
        values = self.v_head(hidden).squeeze(-1).float() if self.v_head is not None else None
        return logp, values


def build_align_module(job: AlignJob, preset, vocab: Vocab) -> AlignModule:
    """The policy loaded (fp32) from job.policy_dir, plus a value head for PPO, in train mode."""
    policy = load_model(job.policy_dir, dtype="float32", device="cpu")
    if policy.config.vocab_size < vocab.vocab_size:
        raise ValueError(f"policy vocab {policy.config.vocab_size} < preset vocab {vocab.vocab_size}")
    return AlignModule(policy, value_head=job.algorithm == "ppo").train()


def rank_shares(algorithm: str, s: AlignSettings, world: int) -> tuple[int, int]:
    """(responses each rank samples per iteration, responses or pairs per rank per micro-batch).

    Each rank samples batch // world responses; a PPO/GRPO update reads mini_batch // world of them per
    rank (at least 1), so a DeepSpeed step that averages gradients over ranks sees the global mini-batch
    the paper names. DPO's mini-batch and accumulation are per device already (the paper: per-device 4
    pairs × 2 accumulation steps), so they are not divided.
    """
    if algorithm == "ppo":
        batch, micro = s.ppo_batch, max(1, s.ppo_mini_batch // world)
    elif algorithm == "grpo":
        batch, micro = s.grpo_batch, max(1, s.grpo_mini_batch // world)
    elif algorithm in ("dpo_online", "dpo_offline"):
        batch, micro = s.dpo_responses, s.dpo_mini_batch
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")
    if batch % world:
        raise ValueError(f"{algorithm}: batch {batch} is not divisible by {world} workers")
    per_rank = batch // world
    if algorithm == "grpo" and per_rank % s.grpo_group:
        raise ValueError(f"grpo: {per_rank} responses per worker do not split into groups of {s.grpo_group}")
    if algorithm.startswith("dpo") and per_rank % 2:
        raise ValueError(f"{algorithm}: {per_rank} responses per worker do not pair up")
    return per_rank, micro


def engine_kwargs(job: AlignJob, preset, world: int | None = None) -> dict:
    """lr, grad_accum, micro_batch (per rank), warmup and grad_clip of the run's engine, for TorchEngine
    (which takes all but micro_batch) and DeepSpeedModuleEngine alike. `world` defaults to
    preset.align.num_workers.

    Gradient clipping follows the paper's trainers: TRL 0.9.6's PPOConfig had max_grad_norm=None (no
    clipping); DPOTrainer and GRPOTrainer inherit HF TrainingArguments' max_grad_norm=1.0. No warmup
    (TRL's PPO had none; the paper names no DPO schedule, and the aligners run at a constant rate).
    """
    s = preset.align
    world = s.num_workers if world is None else world
    _, micro = rank_shares(job.algorithm, s, world)
    if job.algorithm == "ppo":
        return dict(lr=s.ppo_lr, grad_accum=1, micro_batch=micro, warmup=0, grad_clip=0.0)
    elif job.algorithm == "grpo":
        return dict(lr=s.grpo_lr, grad_accum=1, micro_batch=micro, warmup=0, grad_clip=1.0)
    elif job.algorithm in ("dpo_online", "dpo_offline"):
        return dict(lr=s.dpo_lr, grad_accum=s.dpo_grad_accum, micro_batch=micro, warmup=0, grad_clip=1.0)
    else:
        raise ValueError(f"unknown algorithm {job.algorithm!r}; valid: {', '.join(ALGORITHMS)}")


def checkpoint_dir(out_dir: str, step: int) -> str:
    """Where the policy after iteration `step` is saved: out_dir/ckpt-000040."""
    return os.path.join(out_dir, f"ckpt-{int(step):06d}")


def checkpoint_steps(iterations: int, every: int) -> list[int]:
    """Iterations after which the policy is saved: every `every`-th, and the last (every <= 0: the last)."""
    steps = list(range(every, iterations + 1, every)) if every > 0 else []
    return steps if steps and steps[-1] == iterations else steps + [iterations]


def stream_seed(*keys: int) -> int:
    """A 63-bit seed for the stream named by integer keys, e.g. (seed, iteration, rank)."""
    hi, lo = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


# -- pure pieces ----------------------------------------------------------------------------------------

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
def module_logprobs(module: AlignModule, ids: Tensor, rows: int = SCORE_ROWS) -> tuple[Tensor, Tensor | None]:
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


def _mean(values: list[Tensor]) -> float:
    """The mean of per-update scalars, read back to the host once."""
    return float(torch.stack(values).float().mean())


# -- the algorithms ---------------------------------------------------------------------------------------

def ppo_update(engine, ids: Tensor, lengths: Tensor, prompt_len: int, scores: Tensor, old_logp: Tensor,
               old_values: Tensor, ref_logp: Tensor, beta: float, s: AlignSettings, micro: int,
               rng: np.random.Generator) -> dict:
    """PPO on one sampled batch, as TRL 0.9.6's PPOTrainer.step (the paper's trainer):

        r_t  = −β (log π_old − log π_ref)_t + R(y)·1[t = last]           (ppo_token_rewards)
        Â, R̂ = GAE(γ, λ) of r over the response tokens, V_old zeroed outside; R̂ = Â + V_old
        Â    ← whiten(Â) over the rank's valid tokens
        loss = masked_mean(−min(ρÂ, clip(ρ, 1±ε)Â)) + vf_coef · masked_mean(½ max((V−R̂)², (V_clip−R̂)²))

    over ppo_epochs passes of shuffled mini-batches of `micro` responses, one optimiser step each. β is
    fixed (TRL's adaptive KL controller is off: the paper sweeps β as a fixed coefficient), and TRL's
    safety net that zeroes a mini-batch's loss when its mean ratio exceeds ratio_threshold=10 is left out.

    Written here, not with a TRL trainer: TRL 1.16 has no PPOTrainer; TRL trainers own the process group
    and the DeepSpeed engine via accelerate, while this loop runs in Ray Train workers on the engine
    interface shared with distillation; and the tiny world's synthetic vocab has no text tokenizer.
    """
    n = ids.shape[0]
    mask = response_mask(lengths, ids.shape[1], prompt_len)
    with torch.no_grad():
        values = old_values * mask              # TRL: values and rewards are zeroed outside the response
        rewards = ppo_token_rewards(scores, old_logp, ref_logp, mask, beta)
        advantages, returns = gae(rewards, values, s.gamma, s.lam)
        advantages = masked_whiten(advantages, mask)
    losses, pg_losses, vf_losses, clipfracs = [], [], [], []
    for _ in range(s.ppo_epochs):
        order = torch.from_numpy(rng.permutation(n)).to(ids.device)
        for a in range(0, n, micro):
            rows = order[a:a + micro]
            x, m, w = take(ids, lengths, rows, prompt_len)
            logp, v = engine(x)
            adv, lp_old = advantages[rows, :w - 1], old_logp[rows, :w - 1]
            pg = masked_mean(ppo_clipped_loss(logp, lp_old, adv, s.ppo_clip), m)
            vf = masked_mean(clipped_value_loss(v, values[rows, :w - 1], returns[rows, :w - 1], s.ppo_clip), m)
            loss = pg + s.vf_coef * vf
            engine.backward(loss)
            engine.step()
            with torch.no_grad():           # kept on the device: one host sync per iteration, not per update
                ratio = torch.exp(logp - lp_old)
                clipfracs.append(masked_mean(((ratio - 1).abs() > s.ppo_clip).float(), m))
                losses.append(loss.detach())
                pg_losses.append(pg.detach())
                vf_losses.append(vf.detach())
    return {"loss": _mean(losses), "pg_loss": _mean(pg_losses), "vf_loss": _mean(vf_losses),
            "clipfrac": _mean(clipfracs)}


def grpo_update(engine, ids: Tensor, lengths: Tensor, prompt_len: int, scores: Tensor, old_logp: Tensor,
                ref_logp: Tensor, beta: float, s: AlignSettings, micro: int, rng: np.random.Generator) -> dict:
    """GRPO on one sampled batch (Shao et al. 2024; the paper's critic-free aligner (§3.4, appendix A.2) in the LLM world):

        A_i  = R_i − mean_group R (÷ std_group R if grpo_std_normalize), groups of grpo_group consecutive
               responses, the same A_i at every token of response i
        ℓ_t  = −min(ρ_t A, clip(ρ_t, 1±ε) A) + β·k3(π_θ, π_ref)_t,  ρ_t = π_θ/π_old, ε = ppo_clip
        loss = masked mean of ℓ over the mini-batch's response tokens

    one pass over shuffled mini-batches of `micro` responses; π_old is the sampling policy (its log-probs
    from a no-grad pass before the first update), so ρ = 1 on the first mini-batch and the clip acts on
    the later ones. Token-level normalisation (every response token weighs the same) is TRL 1.16's
    default loss_type ('dapo'); the original GRPO averages per sequence first. The paper gives no LLM
    GRPO settings: lr, batch, group and mini-batch are the preset's.

    Written here, not with TRL's GRPOTrainer: its trainer owns the process group and the DeepSpeed engine
    via accelerate, while this loop runs in Ray Train workers on the engine interface shared with
    distillation; its reward functions and collators expect text, and the tiny world's synthetic vocab
    has no tokenizer; and it generates per prompt of a dataset, while every response here answers "The".
    """
    n = ids.shape[0]
    advantages = grpo_advantage(scores.reshape(-1, s.grpo_group), s.grpo_std_normalize).reshape(n)
    losses = []
    order = torch.from_numpy(rng.permutation(n)).to(ids.device)
    for a in range(0, n, micro):
        rows = order[a:a + micro]
        x, m, w = take(ids, lengths, rows, prompt_len)
        logp, _ = engine(x)
        per_token = grpo_token_loss(logp, old_logp[rows, :w - 1], ref_logp[rows, :w - 1], advantages[rows][:, None],
                                    beta, s.ppo_clip)
        loss = masked_mean(per_token, m)
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach())
    return {"loss": _mean(losses)}


def dpo_update(engine, ids: Tensor, lengths: Tensor, prompt_len: int, chosen: Tensor, rejected: Tensor,
               ref_seq: Tensor, beta: float, s: AlignSettings, rng: np.random.Generator) -> dict:
    """DPO updates on one set of pairs (Rafailov et al. 2023; appendix C.3's schedule):

        log π(y) = Σ_t log π(y_t | y_<t) over the response tokens (prompt masked, as TRL's labels −100)
        z        = β [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]
        loss     = mean over the micro-batch of −log σ(z)

    dpo_updates optimiser updates, each of dpo_grad_accum micro-batches of dpo_mini_batch pairs (chosen
    and rejected in one forward, as TRL's concatenated_forward), cycling through the pairs in a shuffled
    order (`cycled_order`). `chosen`/`rejected` index rows of ids; `ref_seq` is log π_ref of every row.
    Logged as TRL does: margin = mean z, accuracy = mean 1[z > 0], reward_chosen/rejected = mean
    β·(log π − log π_ref) of y_w / y_l, averaged over the iteration's micro-batches.

    Written here, not with TRL's DPOTrainer/OnlineDPOTrainer: the paper's on-policy schedule (128 samples
    → 64 pairs → 16 updates per batch) is not OnlineDPOTrainer's (one update per generation); TRL
    trainers own the process group and the DeepSpeed engine via accelerate, while this loop runs in Ray
    Train workers on the engine interface shared with distillation; and the tiny world's synthetic vocab
    has no text tokenizer.
    """
    mb = s.dpo_mini_batch
    order = cycled_order(len(chosen), s.dpo_updates * s.dpo_grad_accum * mb, rng)
    stats = {"loss": [], "margin": [], "accuracy": [], "reward_chosen": [], "reward_rejected": []}
    for u in range(s.dpo_updates * s.dpo_grad_accum):              # micro-batches; the engine steps every GA
        pairs = torch.from_numpy(order[u * mb:(u + 1) * mb]).to(ids.device)
        w_rows, l_rows = chosen[pairs], rejected[pairs]
        x, m, _ = take(ids, lengths, torch.cat([w_rows, l_rows]), prompt_len)
        logp, _ = engine(x)
        seq = (logp * m).sum(-1)
        logp_w, logp_l = seq[:len(pairs)], seq[len(pairs):]
        ref_w, ref_l = ref_seq[w_rows], ref_seq[l_rows]
        loss = dpo_loss(logp_w, logp_l, ref_w, ref_l, beta).mean()
        engine.backward(loss)
        engine.step()
        with torch.no_grad():
            z = dpo_logits(logp_w, logp_l, ref_w, ref_l, beta)
            stats["loss"].append(loss.detach())
            stats["margin"].append(z.mean())
            stats["accuracy"].append((z > 0).float().mean())
            stats["reward_chosen"].append((beta * (logp_w - ref_w)).mean())
            stats["reward_rejected"].append((beta * (logp_l - ref_l)).mean())
    return {k: _mean(v) for k, v in stats.items()}


class PairPool(NamedTuple):
    """Off-policy DPO's static pairs: rows (2i, 2i+1) of `ids` are pair i, labelled once by p_target."""

    ids: Tensor
    lengths: Tensor
    chosen: Tensor
    rejected: Tensor
    ref_seq: Tensor

    @property
    def n_pairs(self) -> int:
        return len(self.chosen)


def load_pair_pool(job: AlignJob, s: AlignSettings, vocab: Vocab, ref: nn.Module, target: nn.Module,
                   device: torch.device) -> PairPool:
    """The first 2·dpo_offline_pairs rows of job.pairs_dir (π_ref's samples, made by the pipeline),
    labelled by p_target and scored by π_ref once, up front."""
    data = read_tokens(job.pairs_dir, vocab.pad_id)
    need = 2 * s.dpo_offline_pairs
    if len(data) < need:
        raise ValueError(f"{job.pairs_dir} has {len(data)} sequences; dpo_offline needs {need}")
    prompt = tuple(data.meta.get("prompt_ids", vocab.prompt_ids))
    if prompt != tuple(vocab.prompt_ids):
        raise ValueError(f"{job.pairs_dir} was sampled from prompt {prompt}, not {vocab.prompt_ids}")
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


# -- the loop -----------------------------------------------------------------------------------------------

def _gather(x: Tensor, world: int) -> Tensor:
    """Every rank's rows of x (the same count on each), in rank order; x itself on one process."""
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _mean_over_ranks(stats: dict, world: int, device: torch.device) -> dict:
    """Each statistic averaged over ranks, so every rank returns the same curve."""
    if world == 1:
        return {k: float(v) for k, v in stats.items()}
    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}


def _model_info(directory: str) -> dict:
    path = os.path.join(directory, MODEL_INFO)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _save_checkpoint(policy: nn.Module, job: AlignJob, preset, step: int) -> str:
    """The HF causal LM alone, in fp32 (a bf16 DeepSpeed module is upcast on a copy), plus model.json."""
    if next(policy.parameters()).dtype != torch.float32:
        policy = copy.deepcopy(policy).float()
    directory = checkpoint_dir(job.out_dir, step)
    ref_info, target_info = _model_info(job.policy_dir), _model_info(job.target_dir)
    info = {"role": job.role, "preset": preset.name, "seed": job.seed, "source": "aligned",
            "model_id": f"{preset.name}/{job.role}/{os.path.basename(os.path.normpath(job.out_dir))}/"
                        f"{os.path.basename(directory)}",
            "algorithm": job.algorithm, "beta": job.beta, "iteration": step,
            "reference": ref_info.get("model_id", job.policy_dir),
            "target": target_info.get("model_id", job.target_dir)}
    return save_model(policy, directory, info)


def run_align(job: AlignJob, preset, vocab: Vocab, engine, rank: int = 0, world: int = 1,
              on_iteration: Callable[[dict], None] | None = None, start: int = 0, curve: list[dict] | None = None,
              on_checkpoint: Callable[[int, list[dict]], None] | None = None) -> list[dict]:
    """Iterations start+1 … job.iterations of job.algorithm on `engine` (built over `build_align_module`
    with `engine_kwargs`); returns the curve, one dict per iteration (the same on every rank):

        step, reward_mean, reward_std   folded R(y) of the iteration's samples over the global batch
                                        (std with Bessel's correction); dpo_offline trains on its static
                                        pairs and samples only to report these
        kl                              mean over responses of Σ_t (log π_old − log π_ref), the sampling
                                        policy's sequence KL estimate (TRL's objective/kl)
        length                          mean generated tokens (through EOS)
        loss                            mean over the iteration's micro-batches (and ranks)
        margin, accuracy, reward_chosen, reward_rejected     DPO (see `dpo_update`)
        pg_loss, vf_loss, clipfrac      PPO

    Rank r samples batch // world responses with a generator seeded by (seed, iteration, r), and
    shuffles with one seeded by (seed, iteration, r, 1). Rank 0 saves the policy to
    checkpoint_dir(out_dir, it) at every `checkpoint_steps` iteration; then, before the last iteration,
    `on_checkpoint(it, curve)` runs on every rank (the place to `save_align_state`), and
    `on_iteration(row)` runs on every rank after each iteration.

    Resuming: restore a saved state into the engine (`load_align_state`) and pass its (start, curve);
    the result equals an uninterrupted run's, since iteration i's draws depend only on (seed, i, rank).
    With world > 1 torch.distributed must be initialised (the engine's group).
    The policy is read through `engine.module`, so ZeRO stage ≤ 2 (full weights on every rank).
    """
    s = preset.align
    n_samples, micro = rank_shares(job.algorithm, s, world)
    module = engine.module
    device = next(module.parameters()).device
    prompt_len = len(vocab.prompt_ids)
    # π_ref in the trained module's dtype, so the KL is exactly 0 before the first update; p_target in
    # fp32, since the reward exponentiates its NLL.
    ref = load_model(job.policy_dir, dtype=next(module.parameters()).dtype, device=device).requires_grad_(False)
    target = load_model(job.target_dir, dtype="float32", device=device).requires_grad_(False)
    decoder = Decoder(module.policy, n_samples, prompt_len + s.max_new_tokens)
    pool = load_pair_pool(job, s, vocab, ref, target, device) if job.algorithm == "dpo_offline" else None
    saves = set(checkpoint_steps(job.iterations, s.checkpoint_every))
    curve = list(curve or [])
    if len(curve) != start:
        raise ValueError(f"resuming after iteration {start} needs its {start} curve points, got {len(curve)}")
    for it in range(start + 1, job.iterations + 1):
        gen = torch.Generator(device=device)
        gen.manual_seed(stream_seed(job.seed, it, rank))
        rng = np.random.default_rng([job.seed, it, rank, 1])

        # Sample, score by p_target, π_ref and the sampling policy.
        ids, lengths = sample_responses(decoder, vocab, s, gen)
        mask = response_mask(lengths, ids.shape[1], prompt_len)
        target_ll = masked_mean(token_logprobs(target, ids), mask, dim=-1)
        scores = folded_reward(target_ll, job.reward)
        ref_logp = token_logprobs(ref, ids)
        old_logp, old_values = module_logprobs(module, ids)
        kl = ((old_logp - ref_logp) * mask).sum(-1)

        # Update.
        if job.algorithm == "ppo":
            stats = ppo_update(engine, ids, lengths, prompt_len, scores, old_logp, old_values, ref_logp, job.beta,
                               s, micro, rng)
        elif job.algorithm == "grpo":
            stats = grpo_update(engine, ids, lengths, prompt_len, scores, old_logp, ref_logp, job.beta, s, micro,
                                rng)
        elif job.algorithm == "dpo_online":
            chosen, rejected = label_pairs(target_ll)
            ref_seq = (ref_logp * mask).sum(-1)
            stats = dpo_update(engine, ids, lengths, prompt_len, chosen, rejected, ref_seq, job.beta, s, rng)
        elif job.algorithm == "dpo_offline":
            k = offline_pairs(it, rank, world, s.dpo_responses // 2, pool.n_pairs).to(device)
            stats = dpo_update(engine, pool.ids, pool.lengths, prompt_len, pool.chosen[k], pool.rejected[k],
                               pool.ref_seq, job.beta, s, rng)
        else:
            raise ValueError(f"unknown algorithm {job.algorithm!r}; valid: {', '.join(ALGORITHMS)}")

        # Record (global over ranks) and checkpoint.
        all_scores = _gather(scores, world)
        row = {"step": it, "reward_mean": float(all_scores.mean()), "reward_std": float(all_scores.std()),
               **_mean_over_ranks({"kl": kl.mean(), "length": (lengths - prompt_len).float().mean(), **stats},
                                  world, device)}
        curve.append(row)
        if rank == 0 and it in saves:
            _save_checkpoint(module.policy, job, preset, it)
        if on_checkpoint and it in saves and it < job.iterations:
            on_checkpoint(it, curve)
        if on_iteration:
            on_iteration(row)
    if world > 1:
        dist.barrier()                          # every rank returns once rank 0's last checkpoint is written
    return curve


# -- resume -------------------------------------------------------------------------------------------------

def rng_state() -> dict:
    """This process's global random states (torch CPU and CUDA, numpy, python). The run's own draws do
    not read them (every sample and shuffle has a generator seeded by (seed, iteration, rank)), but
    library code may, so a resumed run restores them too."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_align_state(directory: str, engine, job: AlignJob, step: int, curve: list[dict], rank: int = 0) -> str:
    """Everything a run needs to continue after iteration `step` exactly as if it had not stopped, in
    `directory` (every rank calls it, with its own engine):

        the engine's state      `engine.save`: policy and value head, optimiser state, LR schedule
                                (DeepSpeed: its checkpoint, one optimiser partition per rank)
        rng-rank<r>.pt          rank r's global random states (`rng_state`)
        align_state.json        rank 0: which run (role, algorithm, out_dir, seed), `step`, the curve so far

    The iteration's own noise needs no saving: iteration i draws from generators seeded by
    (seed, i, rank), so iteration step+1 draws the same whether or not the run stopped in between."""
    os.makedirs(directory, exist_ok=True)
    engine.save(directory)
    torch.save(rng_state(), os.path.join(directory, f"rng-rank{rank}.pt"))
    if rank == 0:
        write_json(os.path.join(directory, STATE_FILE), {**_run_key(job), "step": int(step), "curve": curve})
    return directory


def load_align_state(directory: str, engine, job: AlignJob, rank: int = 0) -> tuple[int, list[dict]] | None:
    """Restore a `save_align_state` directory of this same run into `engine` and this process's random
    states; returns (step, curve so far), or None when the directory holds another run's state (or none)."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    if {k: state.get(k) for k in _run_key(job)} != _run_key(job):
        return None
    engine.load(directory)
    set_rng_state(torch.load(os.path.join(directory, f"rng-rank{rank}.pt"), weights_only=False))
    return int(state["step"]), state["curve"]


def _run_key(job: AlignJob) -> dict:
    """What identifies a run in its resume state (so a state is never loaded into another job)."""
    return {"role": job.role, "algorithm": job.algorithm, "beta": job.beta, "iterations": job.iterations,
            "seed": job.seed, "out_dir": os.path.abspath(job.out_dir)}


# -- selection and the run's record ----------------------------------------------------------------------------

def finish_align(job: AlignJob, preset, curve: list[dict]) -> dict:
    """Select the aligned model among the saved checkpoints (`selection.select_checkpoint`), write
    out_dir/curve.json, then out_dir/align.json last and atomically (its presence marks the run done);
    returns align.json's content."""
    s = preset.align
    steps = checkpoint_steps(job.iterations, s.checkpoint_every)
    missing = [st for st in steps if not os.path.isdir(checkpoint_dir(job.out_dir, st))]
    if missing:
        raise FileNotFoundError(f"{job.out_dir}: checkpoints of iterations {missing} were not written")
    step, reason = select_checkpoint(job.algorithm, curve, steps, s)
    write_json(os.path.join(job.out_dir, CURVE_FILE), curve)
    record = {
        "role": job.role, "algorithm": job.algorithm, "beta": job.beta, "iterations": job.iterations,
        "seed": job.seed, "reward": job.reward, "policy_dir": job.policy_dir, "target_dir": job.target_dir,
        "pairs_dir": job.pairs_dir, "selected_step": step,
        "selected_dir": os.path.basename(checkpoint_dir(job.out_dir, step)),
        "rule": selection_rule(job.algorithm), "reason": reason, "checkpoints": steps,
        "selected": next(row for row in curve if int(row["step"]) == step), "final": curve[-1],
        "settings": asdict(s),
    }
    write_json(os.path.join(job.out_dir, ALIGN_FILE), record)
    return record


def is_aligned(out_dir: str) -> bool:
    """A run is complete once align.json is written (after its checkpoints and curve)."""
    return os.path.exists(os.path.join(out_dir, ALIGN_FILE))


def read_align(out_dir: str) -> dict:
    with open(os.path.join(out_dir, ALIGN_FILE)) as f:
        return json.load(f)


def read_curve(out_dir: str) -> list[dict]:
    """The per-iteration curve of a finished run (curve.json)."""
    with open(os.path.join(out_dir, CURVE_FILE)) as f:
        return json.load(f)


def selected_model_dir(out_dir: str) -> str:
    """The selected checkpoint's model directory of a finished run."""
    return os.path.join(out_dir, read_align(out_dir)["selected_dir"])
