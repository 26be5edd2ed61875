"""New tokens per second when a SmolLM2-shaped teacher writes a KD data set (random init, real shape).

Variants, each printed as a row the moment it finishes (so a run cut short still reports):
  hf            HF `generate` (dynamic cache), do_sample, top_p 1.0, top_k 0
  hf-static     HF `generate` with cache_implementation="static" and a compiled forward
  ours          adk_ray's Decoder: static KV cache, exponential-race sampling, eager step
  ours-compile  the same, decode step torch.compile(mode="reduce-overhead") (CUDA graphs)
  ours-e2e      ours-compile through `sample_chunks` (host copy and trimming included)
Target on one H100: >= 100k new tokens/s for 135M at bf16 (plain generate ~2.7k in the anchor run).

    python benchmarks/llm_sampling.py                         # GPU: 135M, batch 512, 256 new tokens
    python benchmarks/llm_sampling.py --shape 360M --batch 256 --variants ours-compile
    python benchmarks/llm_sampling.py --cpu-smoke             # a seconds-long CPU check of the script
"""
from __future__ import annotations

import argparse
import time

import torch

from adk_ray.worlds.llm.models import Vocab, llama_config
from adk_ray.worlds.llm.presets import ModelSpec, smol
from adk_ray.worlds.llm.sampling import Decoder, sample_chunks

from rows import print_table, row  # benchmarks/rows.py: the script's folder is on sys.path

VARIANTS = ("hf", "hf-static", "ours", "ours-compile", "ours-e2e")
def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(spec: ModelSpec, vocab: Vocab, device, dtype):
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config(spec, vocab)).to(device=device, dtype=dtype).eval()


def bench_hf(model, vocab, batch, new, device, static: bool) -> tuple[float, float]:
    if static:
        model.generation_config.cache_implementation = "static"
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    x = torch.tensor(vocab.prompt_ids, device=device).expand(batch, -1).contiguous()
    kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new, min_new_tokens=new,
              pad_token_id=vocab.pad_id, attention_mask=torch.ones_like(x))
    with torch.no_grad():
        t = time.perf_counter()
        warm_new = new if static else 8              # a static cache is captured at its full length
        model.generate(x, **{**kw, "max_new_tokens": warm_new, "min_new_tokens": warm_new})
        sync(device)
        warm = time.perf_counter() - t
        t = time.perf_counter()
        out = model.generate(x, **kw)
        sync(device)
        dt = time.perf_counter() - t
    return batch * (out.shape[1] - x.shape[1]) / dt, warm


def bench_ours(model, vocab, batch, new, device, compile: bool) -> tuple[float, float]:
    dec = Decoder(model, batch, len(vocab.prompt_ids) + new, compile=compile)
    gen = torch.Generator(device=device)
    no_eos = -1                                     # count every position: no row stops early
    t = time.perf_counter()
    for _ in range(2 if compile else 1):           # compile: capture, then a warm pass
        gen.manual_seed(0)
        dec.decode(vocab.prompt_ids, new, 1.0, 1.0, gen, no_eos, vocab.pad_id)
    sync(device)
    warm = time.perf_counter() - t
    gen.manual_seed(1)
    t = time.perf_counter()
    tokens, lengths, _ = dec.decode(vocab.prompt_ids, new, 1.0, 1.0, gen, no_eos, vocab.pad_id)
    sync(device)
    dt = time.perf_counter() - t
    return batch * new / dt, warm


def bench_e2e(model, vocab, batch, new, device, chunks: int = 3) -> tuple[float, float]:
    no_eos = Vocab(vocab.vocab_size, vocab.bos_id, -1, vocab.pad_id, vocab.prompt_ids)
    compile = device.type == "cuda"
    t = time.perf_counter()
    sample_chunks(model, no_eos, [0], batch, batch, new, 1.0, 1.0, seed=0, compile=compile)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    seqs, _, _ = sample_chunks(model, no_eos, list(range(chunks)), batch * chunks, batch, new, 1.0, 1.0, seed=1,
                               compile=compile)
    dt = time.perf_counter() - t
    return sum(len(s) - len(vocab.prompt_ids) for s in seqs) / dt, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="135M", choices=("135M", "360M", "1.7B"))
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--new", type=int, default=256, help="new tokens per sequence")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shape on CPU, to check the script runs")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    vocab = Vocab(49152, 0, 0, 0, (0, 504))        # SmolLM2: <|endoftext|> + "The"
    spec = smol(args.shape)
    if args.cpu_smoke:
        spec = ModelSpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2)
        vocab = Vocab(512, 0, 0, 0, (0, 5))
        args.batch, args.new, args.dtype = 8, 16, "float32"
        torch.set_num_threads(1)
        args.shape = "smoke"
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__} device {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'} "
          f"shape {args.shape} batch {args.batch} new {args.new} {args.dtype}",
          flush=True)
    for v in args.variants.split(","):
        model = build(spec, vocab, device, dtype)
        try:
            if v in ("hf", "hf-static"):
                if v == "hf-static" and device.type != "cuda":
                    continue
                tps, warm = bench_hf(model, vocab, args.batch, args.new, device, static=v == "hf-static")
            elif v in ("ours", "ours-compile"):
                tps, warm = bench_ours(model, vocab, args.batch, args.new, device,
                                       compile=v == "ours-compile" and device.type == "cuda")
            elif v == "ours-e2e":
                tps, warm = bench_e2e(model, vocab, args.batch, args.new, device)
            else:
                raise ValueError(f"unknown variant {v}")
            mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else 0.0
            row(f"sample {v} {args.shape}", f"B={args.batch} new={args.new}", f"{tps:,.0f} tok/s",
                f"warm {warm:.1f}s", f"{mem:.1f} GiB")
        except Exception as e:                      # keep going: one broken variant must not hide the others
            import traceback
            traceback.print_exc()
            row(f"sample {v} {args.shape}", "FAILED", repr(e)[:300], "", "")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    print_table("run", "shape", "throughput", "warmup", "memory")


if __name__ == "__main__":
    main()
