"""Student-training throughput and MFU for SmolLM2 shapes at seq 512 (random init, random tokens).

MFU (model FLOPs utilisation, the usual formula): tokens/s × (6·N + 12·layers·hidden·T) / peak, with the
H100 SXM dense bf16 peak of 989 TFLOP/s (override with PEAK_TFLOPS). Every variant runs the world's own
engines (`adk_ray.worlds.llm.train.student_engine`), so what is measured is what the pipeline trains with:

  plain            TorchEngine: bf16 autocast, fused AdamW, WSD           (anchor: eager ~17 %)
  plain-compile    TorchEngine with torch.compile                           (anchor: ~34 %)
  plain-chunked    plain-compile + chunked lm_head/cross-entropy loss
  ds               DeepSpeedModuleEngine, ZeRO-2, bf16 (one process)              (anchor: ~15 %)
  ds-compile       DeepSpeedModuleEngine with the student compiled before DeepSpeed wraps it
  ds-compile-chunked
  ray              ds-compile(-chunked, with --chunked) inside a Ray Train TorchTrainer worker (1 GPU)
Target: >= 45 % MFU for 360M on one H100. Rows print as each variant finishes.

    python benchmarks/llm_train_mfu.py                               # GPU: 360M, B=32, T=512, all variants
    python benchmarks/llm_train_mfu.py --variants ds-compile,ray --batch 64
    python benchmarks/llm_train_mfu.py --cpu-smoke                   # seconds-long CPU check of the script
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from adk_ray.worlds.llm.models import Vocab, build_model, count_params
from adk_ray.worlds.llm.presets import ModelSpec, TrainSettings, smol
from adk_ray.worlds.llm.train import student_engine, train_step

from rows import print_table, row  # benchmarks/rows.py: the script's folder is on sys.path

VARIANTS = ("plain", "plain-compile", "plain-chunked", "ds", "ds-compile", "ds-compile-chunked", "ray")
PEAK = float(os.environ.get("PEAK_TFLOPS", "989"))
def flops_per_token(spec: ModelSpec, n_params: int, T: int) -> float:
    return 6 * n_params + 12 * spec.num_hidden_layers * spec.hidden_size * T


def settings_for(variant: str, batch: int, chunked: bool) -> TrainSettings:
    return TrainSettings(per_device_batch=batch, compile="compile" in variant or variant in ("plain-chunked", "ray"),
                         loss="chunked" if ("chunked" in variant or (variant == "ray" and chunked)) else "hf")


def timed_steps(engine, ids, labels, steps: int, warmup: int) -> float:
    """Seconds per optimiser step after `warmup` steps (compile and allocator warm-up excluded)."""
    for _ in range(warmup):
        train_step(engine, ids, labels)
    if ids.is_cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss = train_step(engine, ids, labels)
    float(loss)
    if ids.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def ensure_process_group() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        return
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0").items():
        os.environ.setdefault(k, v)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def run_variant(variant: str, spec: ModelSpec, vocab: Vocab, B: int, T: int, steps: int, warmup: int,
                chunked: bool) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s = settings_for(variant, B, chunked)
    total = 10 ** 6                                   # the stable phase of WSD
    model = build_model(spec, vocab, seed=0)
    n = count_params(model)
    if variant.startswith("plain"):
        engine = student_engine(model, s, total, device)
    else:
        ensure_process_group()
        engine = student_engine(model, s, total, 0 if device == "cuda" else None, world_size=1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab.vocab_size, (B, T), generator=g).to(engine.device)
    dt = timed_steps(engine, ids, ids.clone(), steps, warmup)
    tps = B * T / dt
    mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else 0.0
    return {"tps": tps, "mfu": tps * flops_per_token(spec, n, T) / (PEAK * 1e12), "mem": mem, "params": n}


def ray_worker(config: dict) -> None:
    import json
    import tempfile

    import ray.train
    out = run_variant("ds-compile-chunked" if config["chunked"] else "ds-compile", config["spec"], config["vocab"],
                      config["B"], config["T"], config["steps"], config["warmup"], config["chunked"])
    with tempfile.TemporaryDirectory() as d:       # Train V2 keeps metrics only with a checkpoint
        with open(os.path.join(d, "mfu.json"), "w") as f:
            json.dump(out, f)
        ray.train.report(out, checkpoint=ray.train.Checkpoint.from_directory(d))


def run_ray(spec, vocab, B, T, steps, warmup, chunked) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    ray.init(include_dashboard=False, log_to_driver=True)
    try:
        gpu = torch.cuda.is_available()
        result = TorchTrainer(ray_worker, train_loop_config=dict(spec=spec, vocab=vocab, B=B, T=T, steps=steps,
                                                                 warmup=warmup, chunked=chunked),
                              scaling_config=ScalingConfig(num_workers=1, use_gpu=gpu),
                              run_config=RunConfig(storage_path="/tmp/adk_ray_mfu", name=f"mfu-{time.time():.0f}")
                              ).fit()
        import json
        with result.checkpoint.as_directory() as d, open(os.path.join(d, "mfu.json")) as f:
            return json.load(f)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="360M", choices=("135M", "360M", "1.7B"))
    ap.add_argument("--batch", type=int, default=32, help="per-device batch (the paper's is 64)")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--chunked", action="store_true", help="the ray variant uses the chunked loss")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shape on CPU, to check the script runs")
    args = ap.parse_args()
    vocab = Vocab(49152, 0, 0, 0, (0, 504))
    spec = smol(args.shape)
    if args.cpu_smoke:
        spec = ModelSpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2)
        vocab = Vocab(512, 0, 0, 0, (0, 5))
        args.batch, args.seq, args.steps, args.warmup = 4, 32, 2, 1
        torch.set_num_threads(1)
        args.shape = "smoke"
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__} device {dev} shape {args.shape} "
          f"B={args.batch} T={args.seq} peak {PEAK} TFLOP/s", flush=True)
    for v in args.variants.split(","):
        t0 = time.perf_counter()
        try:
            if v == "ray":
                out = run_ray(spec, vocab, args.batch, args.seq, args.steps, args.warmup, args.chunked)
            else:
                out = run_variant(v, spec, vocab, args.batch, args.seq, args.steps, args.warmup, args.chunked)
            row(f"train {v} {args.shape}", f"B={args.batch} T={args.seq}", f"{out['tps']:,.0f} tok/s",
                f"MFU {out['mfu']:.1%}", f"{out['mem']:.1f} GiB", f"{time.perf_counter() - t0:.0f}s")
        except Exception as e:
            import traceback
            traceback.print_exc()
            row(f"train {v} {args.shape}", "FAILED", repr(e)[:300], "", "", "")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print_table("run", "shape", "throughput", "MFU", "memory", "wall")


if __name__ == "__main__":
    main()
