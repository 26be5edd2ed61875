"""The LLM world's alignment run (paper §4.2, appendix C.3): any aligner of `aligners.ALIGNERS` (PPO with a
value head, on- and off-policy DPO and IPO, GRPO) as one Ray-free loop over an optimiser engine (`engine.py`).

Every algorithm shares one iteration:

    1. the policy samples its rank's share of responses to the prompt ("The") at align.temperature, up
       to align.max_new_tokens tokens, with a generator seeded by (seed, iteration, rank);
    2. p_target scores them: R(y) = fold(10·exp(−0.5·NLL_target(y)), τ_r), NLL the mean over the
       response tokens (through EOS) exactly as `metrics.sequence_logliks`;
    3. π_ref (a frozen copy of the start policy) and the sampling policy score every response token;
    4. the aligner's update (its table entry), each step `engine(ids)` → `engine.backward(loss)` → `engine.step()`;
    5. one curve point: reward mean/std over the GLOBAL batch, sequence KL to π_ref, the loss, and the
       pair aligners' margin and accuracy; rank 0 saves the policy every align.checkpoint_every
       iterations, and then every rank may save the run's resume state (`save_align_state`: engine, step,
       curve, random states), from which `run_align(start=..., curve=...)` continues bit-identically.

All losses are over response tokens only: the prompt and everything after EOS are masked. Why the
updates are not TRL's trainers: see `aligners.py`.

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
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from adk_ray.objectives.rl import masked_mean
from adk_ray import storage
from adk_ray.storage import write_json
from adk_ray.worlds.llm.aligners import ALIGNERS, Batch, aligner, load_pair_pool, rank_shares, select_checkpoint
from adk_ray.worlds.llm.models import MODEL_INFO, Vocab, load_model, model_info, save_model
from adk_ray.worlds.llm.responses import (folded_reward, module_logprobs, response_mask, sample_responses,
                                          token_logprobs)
from adk_ray.worlds.llm.sampling import Decoder

ALIGN_FILE = "align.json"
CURVE_FILE = "curve.json"
STATE_FILE = "align_state.json"


@dataclass(frozen=True)
class AlignJob:
    """One alignment run: `algorithm` with coefficient `beta` for `iterations`, from `policy_dir`."""

    role: str
    """The aligned model's role, e.g. 'p_dprime_KA' or 'p_prime_AK' (written into each checkpoint's model.json)."""
    algorithm: str
    """A key of aligners.ALIGNERS: 'ppo', 'dpo_online', 'dpo_offline', 'grpo', 'ipo_online', 'ipo_offline'."""
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
    """Off-policy pair aligners only: a finished token set of π_ref samples with >= 2·dpo.offline_pairs
    rows; rows (2i, 2i+1) are pair i."""

    def __post_init__(self) -> None:
        entry = aligner(self.algorithm)
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if entry.offline and not self.pairs_dir:
            raise ValueError(f"{self.algorithm} needs pairs_dir (a token set of π_ref samples)")
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
    """The policy loaded (fp32) from job.policy_dir, plus a value head if the aligner trains one (PPO),
    in train mode."""
    policy = load_model(job.policy_dir, dtype="float32", device="cpu")
    if policy.config.vocab_size < vocab.vocab_size:
        raise ValueError(f"policy vocab {policy.config.vocab_size} < preset vocab {vocab.vocab_size}")
    return AlignModule(policy, value_head=ALIGNERS[job.algorithm].value_head).train()


def engine_kwargs(job: AlignJob, preset, world: int | None = None) -> dict:
    """lr, grad_accum, micro_batch (per rank), warmup and grad_clip of the run's engine, for TorchEngine
    (which takes all but micro_batch) and DeepSpeedModuleEngine alike, from the aligner's settings.
    `world` defaults to preset.align.num_workers. No warmup (TRL's PPO had none; the paper names no DPO
    schedule, and the aligners run at a constant rate)."""
    world = preset.align.num_workers if world is None else world
    s = ALIGNERS[job.algorithm].settings_of(preset.align)
    shares = rank_shares(job.algorithm, preset.align, world)
    return dict(lr=s.lr, grad_accum=shares.grad_accum, micro_batch=shares.micro, warmup=0, grad_clip=s.grad_clip)


def checkpoint_dir(out_dir: str, step: int) -> str:
    """Where the policy after iteration `step` is saved: out_dir/ckpt-000040."""
    return storage.join(out_dir, f"ckpt-{int(step):06d}")


def checkpoint_steps(iterations: int, every: int) -> list[int]:
    """Iterations after which the policy is saved: every `every`-th, and the last (every <= 0: the last)."""
    steps = list(range(every, iterations + 1, every)) if every > 0 else []
    return steps if steps and steps[-1] == iterations else steps + [iterations]


def stream_seed(*keys: int) -> int:
    """A 63-bit seed for the stream named by integer keys, e.g. (seed, iteration, rank)."""
    hi, lo = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


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
    try:
        return model_info(directory)
    except FileNotFoundError:
        return {}


def _save_checkpoint(policy: nn.Module, job: AlignJob, preset, step: int) -> str:
    """The HF causal LM alone, in fp32 (a bf16 DeepSpeed module is upcast on a copy), plus model.json."""
    if next(policy.parameters()).dtype != torch.float32:
        policy = copy.deepcopy(policy).float()
    directory = checkpoint_dir(job.out_dir, step)
    ref_info, target_info = _model_info(job.policy_dir), _model_info(job.target_dir)
    info = {"role": job.role, "preset": preset.name, "seed": job.seed, "source": "aligned",
            "model_id": f"{preset.name}/{job.role}/{storage.basename(job.out_dir)}/{storage.basename(directory)}",
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
                                        (std with Bessel's correction); off-policy pair aligners train on
                                        their static pairs and sample only to report these
        kl                              mean over responses of Σ_t (log π_old − log π_ref), the sampling
                                        policy's sequence KL estimate (TRL's objective/kl)
        length                          mean generated tokens (through EOS)
        loss                            mean over the iteration's micro-batches (and ranks)
        margin, accuracy, reward_chosen, reward_rejected     DPO, IPO (see `aligners.pair_updates`)
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
    entry = ALIGNERS[job.algorithm]
    own = entry.settings_of(s)
    n_samples, micro, _ = rank_shares(job.algorithm, s, world)
    module = engine.module
    device = next(module.parameters()).device
    prompt_len = len(vocab.prompt_ids)
    # π_ref in the trained module's dtype, so the KL is exactly 0 before the first update; p_target in
    # fp32, since the reward exponentiates its NLL.
    ref = load_model(job.policy_dir, dtype=next(module.parameters()).dtype, device=device).requires_grad_(False)
    target = load_model(job.target_dir, dtype="float32", device=device).requires_grad_(False)
    decoder = Decoder(module.policy, n_samples, prompt_len + s.max_new_tokens)
    pool = load_pair_pool(job.pairs_dir, own, vocab, ref, target, device) if entry.offline else None
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
        stats = entry.update(Batch(engine=engine, s=own, beta=job.beta, micro=micro, prompt_len=prompt_len, ids=ids,
                                   lengths=lengths, mask=mask, scores=scores, target_ll=target_ll, old_logp=old_logp,
                                   old_values=old_values, ref_logp=ref_logp, rng=rng, iteration=it, rank=rank,
                                   world=world, pool=pool))

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
            "seed": job.seed, "out_dir": storage.canonical(job.out_dir)}


# -- selection and the run's record ----------------------------------------------------------------------------

def finish_align(job: AlignJob, preset, curve: list[dict]) -> dict:
    """Select the aligned model among the saved checkpoints (`aligners.select_checkpoint`), write
    out_dir/curve.json, then out_dir/align.json last and atomically (its presence marks the run done);
    returns align.json's content."""
    s = preset.align
    steps = checkpoint_steps(job.iterations, s.checkpoint_every)
    missing = [st for st in steps if not storage.exists(storage.join(checkpoint_dir(job.out_dir, st), MODEL_INFO))]
    if missing:
        raise FileNotFoundError(f"{job.out_dir}: checkpoints of iterations {missing} were not written")
    step, reason = select_checkpoint(job.algorithm, curve, steps, s)
    storage.write_json_at(storage.join(job.out_dir, CURVE_FILE), curve)
    record = {
        "role": job.role, "algorithm": job.algorithm, "beta": job.beta, "iterations": job.iterations,
        "seed": job.seed, "reward": job.reward, "policy_dir": job.policy_dir, "target_dir": job.target_dir,
        "pairs_dir": job.pairs_dir, "selected_step": step,
        "selected_dir": storage.basename(checkpoint_dir(job.out_dir, step)),
        "rule": ALIGNERS[job.algorithm].rule, "reason": reason, "checkpoints": steps,
        "selected": next(row for row in curve if int(row["step"]) == step), "final": curve[-1],
        "settings": asdict(s),
    }
    storage.write_json_at(storage.join(job.out_dir, ALIGN_FILE), record)
    return record


def is_aligned(out_dir: str) -> bool:
    """A run is complete once align.json is written (after its checkpoints and curve)."""
    return storage.exists(storage.join(out_dir, ALIGN_FILE))


def read_align(out_dir: str) -> dict:
    return storage.read_json_at(storage.join(out_dir, ALIGN_FILE))


def read_curve(out_dir: str) -> list[dict]:
    """The per-iteration curve of a finished run (curve.json)."""
    return storage.read_json_at(storage.join(out_dir, CURVE_FILE))


def selected_model_dir(out_dir: str) -> str:
    """The selected checkpoint's model directory of a finished run."""
    return storage.join(out_dir, read_align(out_dir)["selected_dir"])
