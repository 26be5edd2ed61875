"""The language-model world (paper §4.2, appendix C): SmolLM2-family p*, p', p'', p_target, their sampling,
training and metrics, as pure functions that run with or without Ray (see docs/llm.md).

    presets   the `tiny`, `gguf` and `full` casts and every setting of their stages
    models    building, loading and saving models (from scratch, bigram p*, GGUF, hub ids)
    sampling  the static-cache decode loop and the per-shard sampling function
    data      Arrow (Parquet) token sets
    train     loss, AdamW + Warmup-Stable-Decay, data order, plain and DeepSpeed engines
    metrics   per-token log-likelihoods, the four metrics, the folded reward
    engine    optimiser engines (torch, DeepSpeed) behind one interface for fine-tuning stages
    align     the aligners: PPO (value head), DPO on- and off-policy, GRPO
    selection model-selection rules (appendix C.4)
    pad_kd    PAD (VPD/PPD) with the teacher's multiple-choice calibration
    config    LLMTrialConfig, what a sweep varies
    stages    the in-process backend
"""
