"""Student training's memory against the size of its token set, printed in one run: a `tiny`-shaped
student (the tiny preset's p_target) trained for one epoch through `RayBackend.train` on N and on
factor·N sequences, on a real local Ray (127.0.0.1, its own temp dir).

Printed per size: the peak resident memory of the Ray Train workers (ru_maxrss measured inside each
worker by a `RayBackend(worker_hook=...)` after every step, the largest rank shown; the same measurement
works on any checkout, and train.json's own peak_rss_mb is shown where the code records it), sequences
per second over the training steps (train.json's steps_seconds) and the driver's wall time; then the ratio
peak(factor·N) / peak(N), target ≤ 1.3 (printed, never asserted). Training that loads its set into memory
grows with N (the padded [N, width] int32 array alone is 100 MB at 50 000 × 512); a streaming one holds
one shuffle window and a batch.

The token sets are random tokens (lengths uniform in [width/2, width], prompt included) written as the
sampler writes them (`data.write_part` per chunk of 256 rows, then `data.finish_dataset`): the benchmark
measures the data path, not sampling, so nothing is sampled. Long sequences and a large per-device batch
make the data weigh against the tiny model while 10·N still trains in a few minutes on 2 CPU cores.

`--base DIR` runs the same measurement with the code of another checkout (e.g. `git worktree add
/tmp/base <commit>`) on the same token sets, so before/after figures print in the same run. Each
measurement is a subprocess with PYTHONPATH set to its checkout and a fresh Ray.

    python benchmarks/llm_data_scale.py [--n 5000] [--factor 10] [--width 512] [--per-device-batch 256]
        [--workers 2] [--base DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 1.3  # peak(factor·N) / peak(N), printed as met or not, never asserted
CHUNK = 256   # rows per part, the tiny preset's sampling chunk


def write_set(directory: str, n: int, width: int, seed: int) -> None:
    """n random sequences [start_id, random tokens…] of lengths uniform in [width/2, width], in parts of
    CHUNK rows (one per sampling chunk), then dataset.json: the layout the sampler writes."""
    from adk_ray.worlds.llm import data
    from adk_ray.worlds.llm.models import resolve_vocab
    from adk_ray.worlds.llm.presets import get_preset

    vocab = resolve_vocab(get_preset("tiny").tokenizer)
    rng = np.random.default_rng(seed)
    meta = {"benchmark": "llm_data_scale", "prompt_ids": list(vocab.prompt_ids), "max_new_tokens": width - 1,
            "num_samples": n}
    for c, a in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - a)
        lengths = rng.integers(width // 2, width + 1, m)
        seqs = [np.concatenate([vocab.prompt_ids, rng.integers(3, vocab.vocab_size, k - 1)]).astype(np.int32)
                for k in lengths]
        data.write_part(directory, f"part-{c:06d}", seqs, [c] * m, list(range(m)), meta)
    data.finish_dataset(directory, meta)


class RssHook:
    """A worker_hook: after every training step, this rank's peak resident memory so far (ru_maxrss, MB)
    and the one at its first step, into <dir>/rank<r>.json (one small file rewritten per step)."""

    def __init__(self, directory: str):
        self.directory, self.first_mb = directory, None

    def __call__(self, info: dict) -> None:
        if info.get("kind") != "train":
            return
        mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if self.first_mb is None:
            self.first_mb = mb
        with open(os.path.join(self.directory, f"rank{info['rank']}.json"), "w") as f:
            json.dump({"rank": info["rank"], "step": info["step"], "peak_mb": mb, "first_step_mb": self.first_mb}, f)


def child(args) -> None:
    """One checkout's measurement (run with PYTHONPATH = that checkout): a fresh local Ray, then one
    RayBackend.train per token set, smallest first; a ROW line of JSON per set."""
    import ray

    from adk_ray.service.llm_train import RayBackend
    from adk_ray.worlds.llm.backends import TrainJob
    from adk_ray.worlds.llm.models import resolve_vocab
    from adk_ray.worlds.llm.presets import get_preset

    tiny = get_preset("tiny")
    preset = tiny.replace(sampling=dataclasses.replace(tiny.sampling, max_new_tokens=args.width - 1),
                          train=dataclasses.replace(tiny.train, per_device_batch=args.per_device_batch, epochs=1,
                                                    num_workers=args.workers, checkpoint_every=0))
    vocab = resolve_vocab(preset.tokenizer)
    work = tempfile.mkdtemp(prefix="scale", dir="/tmp")
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             _temp_dir=os.path.join(work, "ray"), _node_ip_address="127.0.0.1")
    try:
        for data_dir in args.sets:
            n = int(json.load(open(os.path.join(data_dir, "dataset.json")))["num_rows"])
            hooks = os.path.join(work, f"rss-{n}")
            os.makedirs(hooks)
            out = os.path.join(work, f"student-{n}")
            t = time.perf_counter()
            RayBackend(storage_path=os.path.join(work, "ray_train"), worker_hook=RssHook(hooks)).train(
                preset, vocab, [TrainJob("p_target", preset.p_target, data_dir, out, seed=0)])
            wall = time.perf_counter() - t
            info = json.load(open(os.path.join(out, "train.json")))
            ranks = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(hooks, "rank*.json")))]
            print("ROW " + json.dumps({
                "n": n, "peak_mb": max(r["peak_mb"] for r in ranks), "ranks_peak_mb": [r["peak_mb"] for r in ranks],
                "first_step_mb": max(r["first_step_mb"] for r in ranks), "train_json_peak_mb": info.get("peak_rss_mb"),
                "steps": info.get("total_steps"), "steps_seconds": info["steps_seconds"], "wall_seconds": wall,
                "seq_per_s": n / info["steps_seconds"]}), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def measure(code: str, label: str, sets: list[str], args) -> list[dict]:
    """Run `child` with PYTHONPATH=code, printing each set's row as it finishes."""
    env = {**os.environ, "PYTHONPATH": code, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--width", str(args.width), "--per-device-batch",
           str(args.per_device_batch), "--workers", str(args.workers), "--sets", *sets]
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in proc.stdout:
        if line.startswith("ROW "):
            r = json.loads(line[4:])
            rows.append(r)
            own = f"{r['train_json_peak_mb']:7.0f}" if r["train_json_peak_mb"] is not None else "      -"
            print(f"{label:6s} n={r['n']:6d}  peak RSS {r['peak_mb']:7.0f} MB (ranks "
                  f"{', '.join(f'{x:.0f}' for x in r['ranks_peak_mb'])}; first step {r['first_step_mb']:.0f}; "
                  f"train.json {own})  {r['seq_per_s']:7.1f} seq/s  {r['steps']} steps in "
                  f"{r['steps_seconds']:6.1f} s  wall {r['wall_seconds']:6.1f} s", flush=True)
    err = proc.stderr.read()
    if proc.wait():
        raise SystemExit(f"{' '.join(cmd)} (in {code}) failed:\n{err[-4000:]}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="sequences of the small set")
    ap.add_argument("--factor", type=int, default=10, help="the large set has factor·n sequences")
    ap.add_argument("--width", type=int, default=512, help="prompt + max_new_tokens: the padded width")
    ap.add_argument("--per-device-batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers (the tiny preset's 2)")
    ap.add_argument("--base", help="another checkout measured too (before/after in one run)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sets", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    root = tempfile.mkdtemp(prefix="adk_ray_scale_")
    try:
        sets = []
        for n in (args.n, args.factor * args.n):
            d = os.path.join(root, f"set-{n}")
            t = time.perf_counter()
            write_set(d, n, args.width, seed=n)
            mb = sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*.parquet"))) / 2**20
            print(f"set    n={n:6d}  {mb:6.1f} MB of Parquet, {n * args.width * 4 / 2**20:6.1f} MB as padded int32 "
                  f"(written in {time.perf_counter() - t:.1f} s)", flush=True)
            sets.append(d)
        results = {"this": measure(REPO, "this", sets, args)}
        if args.base:
            results["base"] = measure(os.path.abspath(args.base), "base", sets, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    for label, (small, large) in results.items():
        ratio = large["peak_mb"] / small["peak_mb"]
        print(f"{label:6s} peak RSS {args.factor}N / N = {large['peak_mb']:.0f} / {small['peak_mb']:.0f} MB = "
              f"{ratio:.2f}  (target ≤ {TARGET:g}: {'met' if ratio <= TARGET else 'not met'});  "
              f"seq/s N {small['seq_per_s']:.1f}, {args.factor}N {large['seq_per_s']:.1f}")
    if "base" in results:
        for i, n in enumerate((args.n, args.factor * args.n)):
            b, t = results["base"][i], results["this"][i]
            print(f"n={n:6d}: peak RSS base / this = {b['peak_mb']:.0f} / {t['peak_mb']:.0f} MB = "
                  f"{b['peak_mb'] / t['peak_mb']:.2f};  seq/s this / base = {t['seq_per_s'] / b['seq_per_s']:.2f}")


if __name__ == "__main__":
    main()
