"""The language-model world (paper §4.2, appendix C): SmolLM2-family p*, p', p'', p_target, their sampling,
training and metrics, as pure functions that run with or without Ray (see docs/llm.md).

    presets   the `tiny`, `gguf` and `full` casts and every setting of their stages
    models    building, loading and saving models (from scratch, bigram p*, GGUF, hub ids)
    sampling  the static-cache decode loop and the per-shard sampling function
    data      Arrow (Parquet) token sets
    train     loss, AdamW + Warmup-Stable-Decay, data order, plain and DeepSpeed engines
    metrics   per-token log-likelihoods, the four metrics, the folded reward
    engine    optimiser engines (torch, DeepSpeed) behind one interface for fine-tuning stages
    aligners  ALIGNERS, the aligner table: PPO (value head), DPO and IPO on- and off-policy, GRPO
    responses the aligners' pure pieces: response masks, token log-probabilities, reward, pairs
    align     the alignment run of any aligner: loop, checkpoints, resume state, record
    selection model-selection rules (appendix C.4)
    kd_methods KD_METHODS, the KD-method table: seqkd, pad_vpd, pad_ppd
    pad_kd    PAD (VPD/PPD) with the teacher's multiple-choice calibration
    config    LLMTrialConfig, what a sweep varies
    backends  the in-process backend and the stage functions both backends call
"""
