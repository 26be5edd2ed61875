"""Preference-Aligned Distillation (PAD) as a KD stage of the LLM world (PAD paper §4).

PAD fine-tunes a student (the seqkd student of the same teacher) on the teacher's *preferences* over
the student's own samples, instead of on teacher samples. One update, per prompt x ("The"):

    1. diverse responses (paper §4.1)   y_1 … y_n ~ q_θ(· | x) at temperature τ = 0.8
    2. rewards (§4.2, eq. 7–9)          r(y) = (1/|y|) log p(y | x)   (generated tokens, through EOS)
                                        r_stu = r under the student (with gradient)
                                        r̂_tch = (1 − α) r_tch + α log p_sel   (teacher, no gradient)
       p_sel(y_i) = softmax over the teacher's next-token logits of the n choice letters, read at the
       answer position of a multiple-choice question showing y_1 … y_n in a random letter order (eq. 8)
    3. preference distillation (§4.3)   'pad_vpd': −log PL_stu(argsort r̂_tch)   (eq. 10, as an NLL)
                                        'pad_ppd': JSD(PL_tch ‖ PL_stu) over all n! rankings (eq. 11–12)
       decomposed into `groups` groups of n / groups responses (§4.4, eq. 13–14)

The losses live in `adk_ray.objectives.pad`; this module samples, scores, asks the multiple-choice
question and runs the loop. Equation numbers are those of "Capturing Nuanced Preferences: Preference-
Aligned Distillation for Small Language Models" (the PAD paper).

The loop touches the optimiser only through the engine interface of `engine.py` (`engine(*args)`,
`engine.backward`, `engine.step`, `engine.module`), so it runs the same in one process (`TorchEngine`) and
in a Ray Train worker (`DeepSpeedModuleEngine`, ZeRO stage ≤ 2: sampling reads the full weights on every
rank). The module the engine wraps is a `TokenLogProbs` (see `build_pad_module`); `.lm` is the student.

Multiple-choice formats (`mc_prompt`):

  real tokenizers (gguf, full)  text, MMLU-style; the letters are read as the tokens of " A", " B", …:
        <bos>Question: Which of the following texts that begin with "The" is the best?
        A. The cat sat on the mat.
        B. The …
        Answer:
     Checked once by hand with the real SmolLM2-135M-Instruct GGUF: " A" … " D" are single tokens, but
     only ~2 % of its next-token mass falls on them and p_sel follows the letter (≈ 0.8–0.9 on "A" whatever
     response sits there): for small teachers the calibration is mostly position noise, which the random
     letter order keeps unbiased but not small. The students of the gguf preset never saw this format.
  synthetic vocab (tiny)        ids, no text; letter j is the ordinary token vocab_size − n + j:
        [*x, ℓ_0, *y_(o_0), ℓ_1, *y_(o_1), …, ℓ_{n−1}, *y_(o_{n−1}), EOS]   read at the EOS position
     (y without its EOS; EOS plays "Answer:"). A MECHANISM TEST ONLY: the tiny p* is a bigram chain, so
     its next token after EOS ignores the choices and its p_sel is a fixed function of the letter
     permutation; a learned teacher may attend to the choices, but nothing in this world makes a letter
     "correct". It exercises the plumbing (order, batching, the gather, mapping back), not the science.

Choices where the paper is silent: the MCQ wording above; the learning-rate schedule is the engines'
linear warmup then constant (TRL's default decays linearly); AdamW betas (0.9, 0.999), no weight decay
(the HF/TRL defaults); gradient clipping at preset.train.grad_clip; one update per batch of fresh samples
(the paper trains one epoch over a fixed prompt set; here every update samples anew: all prompts are "The").
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from adk_ray.objectives.pad import (calibrated_teacher_reward, decomposed, length_normalised_reward,
                                    mc_selection_log_probs)
from adk_ray import storage
from adk_ray.worlds.llm.kd_methods import preference_loss
from adk_ray.worlds.llm.models import Vocab, load_model, load_tokenizer, model_info, save_model
from adk_ray.worlds.llm.presets import LLMPreset, PADSettings
from adk_ray.worlds.llm.sampling import Decoder

PAD_INFO = "pad.json"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Independent random streams drawn from (seed, step, rank, stream).
SAMPLE_STREAM, MCQ_STREAM = 0, 1

__all__ = ["PadJob", "TokenLogProbs", "build_pad_module", "choice_letter_ids", "choice_of_response",
           "generated_mask", "is_pad_done", "mc_orders", "mc_prompt", "mc_text", "pad_engine_kwargs", "pad_loss",
           "ranking_agreement", "response_bodies", "response_rewards", "run_pad", "selection_log_probs"]


@dataclass(frozen=True)
class PadJob:
    """One PAD student to train."""

    role: str
    """Role recorded in model.json, e.g. 'p_dprime' or 'p_dprime_AK'."""
    method: str
    """A key of kd_methods.KD_METHODS with a PAD stage ('pad_vpd', 'pad_ppd')."""
    student_dir: str
    """The start point: the seqkd student of the same teacher (a `save_model` directory)."""
    teacher_dir: str
    """The teacher (a `save_model` directory)."""
    out_dir: str
    """Where the PAD student is saved (`save_model`), with pad.json written last."""
    seed: int
    """Seeds the student's samples and the letter orders: stream (seed, step, rank)."""


# --------------------------------------------------------------------------------------------------- #
# The trained module and rewards (eq. 7)
# --------------------------------------------------------------------------------------------------- #
class TokenLogProbs(nn.Module):
    """A causal LM whose forward is the log-likelihood of each token of its input: what PAD trains.

        forward(input_ids [B, L]) -> [B, L − 1] fp32,   out[b, t − 1] = log q(x_t | x_<t)

    The trunk runs once; lm_head + log-softmax run over chunks of `chunk_tokens` positions, under
    activation checkpointing when gradients are on, so the [B, L, vocab] fp32 logits never exist at once
    (with SmolLM2's 49k vocab, 512 responses × 129 tokens of them are ≈ 13 GB). `lm` must have the
    Llama layout (`.model` trunk, `.lm_head`; no logit scaling), as `train.CausalLMLoss` assumes too.
    """

    def __init__(self, lm: nn.Module, chunk_tokens: int = 8192):
        super().__init__()
        self.lm, self.chunk_tokens = lm, int(chunk_tokens)

    def forward(self, input_ids: Tensor) -> Tensor:
        hidden = self.lm.model(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1]
        B, T, H = hidden.shape
        h, y = hidden.reshape(B * T, H), input_ids[:, 1:].reshape(B * T)
        parts = []
        for a in range(0, B * T, self.chunk_tokens):
            args = (h[a:a + self.chunk_tokens], y[a:a + self.chunk_tokens])
            if torch.is_grad_enabled():
                parts.append(torch.utils.checkpoint.checkpoint(self._chunk, *args, use_reentrant=False))
            else:
                parts.append(self._chunk(*args))
        return torch.cat(parts).reshape(B, T)

    def _chunk(self, h: Tensor, y: Tensor) -> Tensor:
        z = self.lm.lm_head(h).float()
        return z.gather(-1, y[:, None])[:, 0] - torch.logsumexp(z, dim=-1)

    def last_logits(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        """[B, vocab] fp32 next-token logits at each row's last real position lengths[b] − 1.

        Rows are right-padded: causal attention never lets a position see the padding after it, so no
        attention mask is needed, and only B hidden states go through lm_head.
        """
        hidden = self.lm.model(input_ids=input_ids, use_cache=False).last_hidden_state
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths.to(hidden.device) - 1]
        return self.lm.lm_head(last).float()


def generated_mask(lengths: Tensor, width: int, prompt_length: int) -> Tensor:
    """[B, width − 1] bool: true where column t − 1 of a `TokenLogProbs` table scores a generated token.

        mask[b, t − 1] = prompt_length ≤ t < lengths[b]     (the prompt is masked; EOS is included)
    """
    pos = torch.arange(1, width, device=lengths.device)[None, :]
    return (pos >= prompt_length) & (pos < lengths[:, None])


def response_rewards(scorer: Callable[[Tensor], Tensor], tokens: Tensor, lengths: Tensor,
                     prompt_length: int) -> Tensor:
    """r(y | x) = (1/|y|) Σ_t log p(y_t | y_<t, x), paper eq. 7, for each row of `tokens` [B, L].

    `scorer` maps input ids to a `TokenLogProbs` table (the engine for the student, with gradient; a
    `TokenLogProbs` teacher under no_grad). |y| counts the generated tokens through EOS, exactly the
    positions `metrics.sequence_logliks` averages over. Returns [B] fp32.
    """
    logp = scorer(tokens)
    mask = generated_mask(lengths.to(logp.device), tokens.shape[1], prompt_length)
    return length_normalised_reward(logp, mask)


# --------------------------------------------------------------------------------------------------- #
# Multiple-choice calibration (eq. 8–9)
# --------------------------------------------------------------------------------------------------- #
def stream_seed(*keys: int) -> int:
    """A 63-bit seed for the stream named by integer keys, e.g. (seed, step, rank, SAMPLE_STREAM)."""
    hi, lo = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


def mc_orders(seed: int, step: int, rank: int, prompts: int, n: int) -> Tensor:
    """The random letter order of each prompt's question: LongTensor [prompts, n], a permutation per row;
    order[g, j] is the response shown under letter j (paper §4.2: "randomly map each response to a
    choice"). Seeded by (seed, step, rank), independent of the sampling stream."""
    rng = np.random.default_rng([int(seed), int(step), int(rank), MCQ_STREAM])
    return torch.from_numpy(np.stack([rng.permutation(n) for _ in range(prompts)]).astype(np.int64))


def choice_of_response(order: Tensor) -> Tensor:
    """The inverse permutation: c[g, i] = the letter index under which response i is shown (order[g, c] = i).
    This is the `choice_of_response` that `objectives.pad.mc_selection_log_probs` maps back with."""
    return order.argsort(dim=-1)


def choice_letter_ids(n: int, vocab: Vocab, tokenizer=None) -> tuple[int, ...]:
    """Token ids of the n choice letters, in letter order A, B, C, …

    Real tokenizers: the single token each of " A", " B", … encodes to (the token that follows
    "Answer:"). Synthetic vocab: the last n ordinary ids, vocab_size − n … vocab_size − 1.

    Raises:
        ValueError: n < 2 or > 26; a letter that is not one token; a synthetic letter that collides with
            BOS, EOS, pad or the prompt.
    """
    if not 2 <= n <= len(LETTERS):
        raise ValueError(f"multiple choice needs 2 <= n <= {len(LETTERS)} choices, got {n}")
    if tokenizer is None:
        ids = tuple(range(vocab.vocab_size - n, vocab.vocab_size))
        taken = {vocab.bos_id, vocab.eos_id, vocab.pad_id, *vocab.prompt_ids}
        if taken & set(ids):
            raise ValueError(f"synthetic letters {ids} collide with special or prompt ids {sorted(taken)}")
        return ids
    ids = []
    for letter in LETTERS[:n]:
        enc = tokenizer.encode(f" {letter}", add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"the tokenizer encodes ' {letter}' as {len(enc)} tokens {enc}; a choice letter "
                             "must be one token")
        ids.append(int(enc[0]))
    if len(set(ids)) != n:
        raise ValueError(f"choice letters map to repeated ids {ids}")
    return tuple(ids)


def mc_text(prompt_text: str, shown: list[str]) -> str:
    """The multiple-choice question for real tokenizers; `shown[j]` is the text under letter j.

    Newlines inside a choice become spaces, so every choice stays on its own line.
    """
    lines = [f'Question: Which of the following texts that begin with "{prompt_text}" is the best?']
    lines += [f"{LETTERS[j]}. " + " ".join(text.replace("\n", " ").split()) for j, text in enumerate(shown)]
    return "\n".join(lines) + "\nAnswer:"


def response_bodies(tokens: Tensor, lengths: Tensor, prompt_length: int, eos_id: int) -> list[list[int]]:
    """Each row's generated tokens without the prompt and without its final EOS (possibly empty)."""
    out = []
    for row, length in zip(tokens.tolist(), lengths.tolist()):
        body = row[prompt_length:length]
        out.append(body[:-1] if body and body[-1] == eos_id else body)
    return out


def mc_prompt(prompt_ids: tuple[int, ...], bodies: list[list[int]], order: list[int], letter_ids: tuple[int, ...],
              vocab: Vocab, tokenizer=None) -> list[int]:
    """Token ids of one multiple-choice question over the n responses `bodies` (response order, each
    without prompt and EOS); letter j shows response order[j]. The teacher's next token after the last
    id is its answer.

    Synthetic (tokenizer None): [*prompt_ids, ℓ_0, *bodies[order[0]], …, ℓ_{n−1}, *bodies[order[n−1]], EOS].
    Real: [BOS] + tokens of `mc_text`, each choice the decoded text of prompt (without BOS) + body.
    """
    if tokenizer is None:
        ids = list(prompt_ids)
        for j, i in enumerate(order):
            ids += [letter_ids[j], *bodies[i]]
        return ids + [vocab.eos_id]
    shown_prompt = list(prompt_ids[1:] if prompt_ids and prompt_ids[0] == vocab.bos_id else prompt_ids)
    prompt_text = tokenizer.decode(shown_prompt, skip_special_tokens=True).strip()
    shown = [tokenizer.decode(shown_prompt + bodies[i], skip_special_tokens=True) for i in order]
    return [vocab.bos_id] + list(tokenizer.encode(mc_text(prompt_text, shown), add_special_tokens=False))


@torch.no_grad()
def selection_log_probs(teacher: TokenLogProbs, tokens: Tensor, lengths: Tensor, order: Tensor,
                        letter_ids: tuple[int, ...], vocab: Vocab, tokenizer=None, rows: int = 64) -> Tensor:
    """log p_sel(y_i) = log softmax_{c ∈ C_n}(logit_c)[c_i], paper eq. 8, in response order: [G, n].

    `tokens` [G·n, L] holds G prompts' n responses each (prompt g owns rows g·n … g·n + n − 1); `order`
    [G, n] is each question's letter order (`mc_orders`). The G questions are right-padded with pad_id
    to a common length and read `rows` at a time at each one's last real position.
    """
    G, n = order.shape
    bodies = response_bodies(tokens, lengths, len(vocab.prompt_ids), vocab.eos_id)
    questions = [mc_prompt(vocab.prompt_ids, bodies[g * n:(g + 1) * n], order[g].tolist(), letter_ids, vocab,
                           tokenizer) for g in range(G)]
    device = next(teacher.parameters()).device
    letters = torch.tensor(letter_ids, device=device)
    logits = []
    for a in range(0, G, rows):
        chunk = questions[a:a + rows]
        q_len = torch.tensor([len(q) for q in chunk], device=device)
        ids = torch.full((len(chunk), int(q_len.max())), vocab.pad_id, dtype=torch.long, device=device)
        for r, q in enumerate(chunk):
            ids[r, :len(q)] = torch.tensor(q, device=device)
        logits.append(teacher.last_logits(ids, q_len)[:, letters])
    return mc_selection_log_probs(torch.cat(logits), choice_of_response(order).to(device))


# --------------------------------------------------------------------------------------------------- #
# Loss (eq. 10–14) and a diagnostic
# --------------------------------------------------------------------------------------------------- #
def pad_loss(method: str, r_stu: Tensor, r_hat_tch: Tensor, beta: float, groups: int) -> Tensor:
    """The PAD loss of [G, n] rewards, mean over the G prompts, decomposed into `groups` groups (eq. 13–14);
    the method's preference loss from `kd_methods.KD_METHODS`:

        'pad_vpd'  L = Σ_k −log PL_stu(τ_k),  τ_k = argsort_desc r̂_tch within group k   (eq. 10, 14)
        'pad_ppd'  L = Σ_k JSD(PL_tch,k ‖ PL_stu,k) over all m! rankings of group k   (eq. 11–12)

    The n responses of a prompt are i.i.d. draws, so consecutive groups are random groups.
    """
    loss_fn = preference_loss(method)
    n = r_stu.shape[-1]
    if groups < 1 or n % groups:
        raise ValueError(f"groups={groups} must be >= 1 and divide n={n}")
    # The teacher is a fixed target: PPD's JSD would otherwise also pass gradient to it.
    return decomposed(loss_fn, r_stu, r_hat_tch.detach(), beta, n // groups)


def ranking_agreement(a: Tensor, b: Tensor) -> Tensor:
    """Kendall's τ_a between two [..., n] score sets, per row, averaged: (concordant − discordant) / pairs.

        τ = (2 / (n (n − 1))) Σ_{i<j} sign(a_i − a_j) · sign(b_i − b_j)      ∈ [−1, 1]; ties count 0
    """
    n = a.shape[-1]
    i, j = torch.triu_indices(n, n, 1, device=a.device)
    s = torch.sign(a[..., i] - a[..., j]) * torch.sign(b[..., i] - b[..., j])
    return s.float().mean()


# --------------------------------------------------------------------------------------------------- #
# The stage
# --------------------------------------------------------------------------------------------------- #
def build_pad_module(job: PadJob, preset: LLMPreset, vocab: Vocab) -> TokenLogProbs:
    """The module an engine wraps: the student of `job.student_dir` (fp32, CPU) inside `TokenLogProbs`.
    (`preset` and `vocab` keep the signature uniform with the other stages.)"""
    return TokenLogProbs(load_model(job.student_dir, dtype="float32", device="cpu"))


def pad_engine_kwargs(job: PadJob, preset: LLMPreset, world: int = 1) -> dict:
    """Engine arguments of a PAD run: lr, grad_accum 1, micro_batch (prompts per rank; DeepSpeed only),
    warmup = ceil(warmup_ratio · steps) updates (paper Table 4: 0.1), grad_clip (preset.train)."""
    s = preset.pad
    return {"lr": s.lr, "grad_accum": 1, "micro_batch": max(1, s.batch // world),
            "warmup": math.ceil(s.warmup_ratio * s.steps), "grad_clip": preset.train.grad_clip}


def check_settings(method: str, s: PADSettings, world: int) -> int:
    """Prompts per rank (batch // world), after checking the settings a run needs."""
    preference_loss(method)
    if s.n < 2:
        raise ValueError(f"PAD needs n >= 2 responses per prompt, got {s.n}")
    if s.groups < 1 or s.n % s.groups or s.n // s.groups < 2:
        raise ValueError(f"groups={s.groups} must divide n={s.n} into groups of at least 2")
    if not s.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {s.temperature}")
    if s.batch // world < 1:
        raise ValueError(f"batch {s.batch} gives no prompts to each of {world} ranks")
    return s.batch // world


def is_pad_done(out_dir: str) -> bool:
    """A PAD student is complete once pad.json is written (after the weights)."""
    return storage.exists(storage.join(out_dir, PAD_INFO))


def read_pad_info(out_dir: str) -> dict:
    return storage.read_json_at(storage.join(out_dir, PAD_INFO))


def pad_model_info(job: PadJob, preset: LLMPreset) -> dict:
    """model.json of a PAD student: the start point's (source, name, …) with this stage's identity."""
    return {**model_info(job.student_dir), "role": job.role, "preset": preset.name, "seed": job.seed,
            "model_id": f"{preset.name}/{job.role}/{storage.basename(job.out_dir)}",
            "kd_method": job.method, "init_from": storage.basename(job.student_dir),
            "teacher": storage.basename(job.teacher_dir)}


def run_pad(job: PadJob, preset: LLMPreset, vocab: Vocab, engine, rank: int = 0, world: int = 1,
            on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """preset.pad.steps PAD updates of the student `engine` wraps (a `TokenLogProbs`, see module docstring).

    Each rank samples batch // world prompts × n responses; DeepSpeed averages the ranks' gradients, so
    an update follows the mean loss over all batch prompts. Returns one record per update (this rank's
    batch): step (updates done), loss, teacher_reward_mean (r_tch, uncalibrated), calibrated_reward_mean
    (r̂_tch), log_p_sel_mean, student_reward_mean, agreement (Kendall τ of r_stu vs r̂_tch within a
    prompt, before the update), response_length_mean (generated tokens through EOS), eos_fraction, lr,
    seconds. Rank 0 then saves the student (fp32) to job.out_dir and writes pad.json last; the other
    ranks return at once, so a caller that reads out_dir from them needs a barrier first.
    """
    s = preset.pad
    G, n, P = check_settings(job.method, s, world), s.n, len(vocab.prompt_ids)
    t0 = time.perf_counter()
    lm = engine.module.lm
    device = next(lm.parameters()).device
    # Scoring in the sampling dtype (bf16 on GPU) as every other stage does; fp32 on CPU.
    teacher_dtype = preset.sampling.dtype if device.type == "cuda" else "float32"
    teacher = TokenLogProbs(load_model(job.teacher_dir, dtype=teacher_dtype, device=device))
    tokenizer = None
    if s.alpha > 0 and preset.tokenizer.source != "synthetic":
        tokenizer = load_tokenizer(preset.tokenizer)
    letter_ids = choice_letter_ids(n, vocab, tokenizer) if s.alpha > 0 else ()
    decoder = Decoder(lm, G * n, P + s.max_new_tokens)   # one static cache for the whole run
    curve: list[dict] = []
    for step in range(s.steps):
        t_step = time.perf_counter()
        # 1. Diverse responses (§4.1): the student's own samples at τ, no gradient.
        gen = torch.Generator(device=device).manual_seed(stream_seed(job.seed, step, rank, SAMPLE_STREAM))
        lm.eval()
        tokens, lengths, _ = decoder.decode(vocab.prompt_ids, s.max_new_tokens, s.temperature, 1.0, gen,
                                            vocab.eos_id, vocab.pad_id)
        lm.train()
        tokens = tokens[:, :int(lengths.max())]            # nothing past the longest response is scored

        # 2. Rewards (§4.2): the teacher's, calibrated by its multiple-choice answer (eq. 7–9).
        with torch.no_grad():
            r_tch = response_rewards(teacher, tokens, lengths, P).float().view(G, n)
            if s.alpha > 0:
                order = mc_orders(job.seed, step, rank, G, n)
                log_p_sel = selection_log_probs(teacher, tokens, lengths, order, letter_ids, vocab, tokenizer)
            else:
                # α = 0 needs no question: (1 − 0)·r_tch + 0·0 is r_tch exactly.
                log_p_sel = torch.zeros_like(r_tch)
        r_hat = calibrated_teacher_reward(r_tch, log_p_sel, s.alpha)
        # The student's reward carries the gradient: through the engine, so DeepSpeed sees the forward.
        r_stu = response_rewards(engine, tokens, lengths, P).view(G, n)

        # 3. Preference distillation (§4.3–4.4).
        loss = pad_loss(job.method, r_stu, r_hat, s.beta, s.groups)
        lr = engine.lr() if hasattr(engine, "lr") else None   # both engines have it; not part of the contract
        engine.backward(loss)
        engine.step()

        generated = (lengths - P).float()
        record = {"step": step + 1, "loss": float(loss.detach()), "teacher_reward_mean": float(r_tch.mean()),
                  "calibrated_reward_mean": float(r_hat.mean()), "log_p_sel_mean": float(log_p_sel.mean()),
                  "student_reward_mean": float(r_stu.detach().mean()),
                  "agreement": float(ranking_agreement(r_stu.detach(), r_hat)),
                  "response_length_mean": float(generated.mean()),
                  "eos_fraction": float((tokens.gather(1, (lengths - 1)[:, None].to(tokens.device)) ==
                                         vocab.eos_id).float().mean()),
                  "lr": lr, "seconds": time.perf_counter() - t_step}
        curve.append(record)
        if on_step:
            on_step(record)

    if rank == 0:
        _save_student(job, preset, lm, curve, world=world, prompts_per_rank=G, engine=type(engine).__name__,
                      letter_ids=letter_ids, text_mcq=tokenizer is not None, started=t0)
    return curve


def _save_student(job: PadJob, preset: LLMPreset, lm, curve: list[dict], *, world: int, prompts_per_rank: int,
                  engine: str, letter_ids, text_mcq: bool, started: float) -> None:
    """Rank 0's end of `run_pad`: the student (fp32) in job.out_dir, then pad.json (the run's settings,
    its curve and the mean of its last 10 records, wall seconds since `started`), which marks it complete."""
    s = preset.pad
    # In place, as train.py does: the run is over, and DeepSpeed may hold bf16 weights.
    save_model(lm.float(), job.out_dir, pad_model_info(job, preset))
    last = curve[-min(len(curve), 10):] if curve else []
    summary = {k: (float(np.mean([r[k] for r in last])) if last else None)
               for k in ("loss", "agreement", "teacher_reward_mean", "student_reward_mean")}
    write_pad_info(job.out_dir, {
        "role": job.role, "method": job.method, "seed": job.seed, "preset": preset.name,
        "student_dir": job.student_dir, "teacher_dir": job.teacher_dir, "settings": asdict(s),
        "world_size": world, "prompts_per_rank": prompts_per_rank, "engine": engine,
        "mcq_format": "none (alpha = 0)" if s.alpha == 0 else ("text" if text_mcq else "synthetic"),
        "letter_ids": list(letter_ids), "steps": len(curve),
        "first": curve[0] if curve else None, "last10_mean": summary,
        "curve": [{k: r[k] for k in ("step", "loss", "agreement", "teacher_reward_mean",
                                     "calibrated_reward_mean", "student_reward_mean")} for r in curve],
        "wall_seconds": time.perf_counter() - started})


def write_pad_info(out_dir: str, info: dict) -> str:
    """pad.json, atomically; written last, it marks the PAD student complete."""
    return storage.write_json_at(storage.join(out_dir, PAD_INFO), info)
