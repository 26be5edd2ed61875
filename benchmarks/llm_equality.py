"""Bit-identity check for refactors of the LLM world: run the tiny chain and both pipelines for every
aligner and a PAD KD in this process (LocalBackend, no Ray), store every result row, text sample and a
hash of every aligned checkpoint's weights in one Parquet file, and compare two such files exactly.

    python benchmarks/llm_equality.py write /tmp/llm_before.parquet     # on the old code
    python benchmarks/llm_equality.py write /tmp/llm_after.parquet      # on the new code
    python benchmarks/llm_equality.py compare /tmp/llm_before.parquet /tmp/llm_after.parquet

The tiny preset is shrunk (256 training sequences, 64 per metric estimate, 4 alignment iterations with
a checkpoint every 2, 4 PAD steps) so the whole run takes a couple of minutes on two CPU cores; all
cases share one work directory, so the cast (p*, p', p'', p_target) is trained once. `compare` pairs
records by position within each case and demands equal values to the last bit (floats are stored as
JSON, whose repr round-trips exactly; NaN equals NaN); it exits 1 on any difference. Keys only one
record has are listed (a change that adds columns by design), not compared.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import os
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from adk_ray.pipeline.llm_trial import run_llm_trial
from adk_ray.worlds.llm.config import LLMTrialConfig

SHORT = dict(preset="tiny", beta=0.7, iterations=(2, 4), seeds=(0,), train_samples=256, eval_samples=64,
             checkpoint_every=2)
"""Every case's config, before its own changes."""


def cases() -> dict[str, LLMTrialConfig]:
    out = {algo: LLMTrialConfig(algorithm=algo, **SHORT) for algo in ("ppo", "dpo_online", "dpo_offline", "grpo")}
    out["grpo/kd=pad_vpd"] = LLMTrialConfig(**{**SHORT, "algorithm": "grpo", "kd_method": "pad_vpd",
                                               "final_kd_method": "pad_ppd", "iterations": (2,)})
    return out


SMALL_ALIGN = {"ppo": {"batch": 16, "mini_batch": 8}, "dpo": {"responses": 16, "updates": 2, "grad_accum": 1,
                                                           "offline_pairs": 32},
               "grpo": {"batch": 16, "group": 4, "mini_batch": 8}}
"""Per aligner family: the alignment settings a smoke run uses."""


def shrink(preset):
    """The tiny preset cut to a smoke run: fewer alignment samples and updates, fewer PAD steps."""
    a = preset.align
    if hasattr(a, "ppo_batch"):     # the flat settings of the code before #16: ppo_batch, dpo_offline_pairs, ...
        align = dataclasses.replace(a, **{f"{family}_{k}": v for family, kw in SMALL_ALIGN.items()
                                          for k, v in kw.items()})
    else:
        align = dataclasses.replace(a, **{family: dataclasses.replace(getattr(a, family), **kw)
                                          for family, kw in SMALL_ALIGN.items()})
    return preset.replace(align=align, train=dataclasses.replace(preset.train, epochs=1),
                          pad=dataclasses.replace(preset.pad, steps=4, batch=4))


def write(path: str) -> None:
    records = []
    t0 = time.perf_counter()
    # run_llm_trial resolves the preset from the config's name; the smoke sizes go in at that point
    resolved = LLMTrialConfig.resolved_preset
    LLMTrialConfig.resolved_preset = lambda self: shrink(resolved(self))
    hashed: set[str] = set()        # checkpoints of earlier cases (one algorithm may run in several cases)
    with tempfile.TemporaryDirectory() as workdir:
        for name, cfg in cases().items():
            t = time.perf_counter()
            res = run_llm_trial(cfg, workdir)
            records += [{"case": name, "kind": "row", "record": _json(r)} for r in res.rows]
            records += [{"case": name, "kind": "sample", "record": _json(s)} for s in res.samples]
            weights = _weight_hashes(workdir, cfg.algorithm, hashed)
            records += [{"case": name, "kind": "weights", "record": _json(w)} for w in weights]
            print(f"{name:18s} {len(res.rows):4d} rows {len(res.samples):4d} samples {len(weights):3d} checkpoints "
                  f"{time.perf_counter() - t:6.1f} s", flush=True)
    LLMTrialConfig.resolved_preset = resolved
    pq.write_table(pa.Table.from_pylist(records), path)
    print(f"{len(records)} records in {time.perf_counter() - t0:.1f} s -> {path}")


def _json(d: dict) -> str:
    return json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in d.items()}, sort_keys=True)


def _weight_hashes(workdir: str, algorithm: str, hashed: set[str]) -> list[dict]:
    """sha256 over every tensor (name, dtype, shape, bytes) of every checkpoint of this algorithm's runs
    not in `hashed` (then added to it). Directories are named by stage keys that hash settings, so a
    record names the role and step only."""
    out = []
    for d in sorted(glob.glob(os.path.join(workdir, "aligned", f"*-{algorithm}-*", "ckpt-*"))):
        if d in hashed:
            continue
        hashed.add(d)
        role = os.path.basename(os.path.dirname(d)).split(f"-{algorithm}-")[0]
        h = hashlib.sha256()
        for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
            tensors = load_file(f)
            for k in sorted(tensors):
                t = tensors[k].contiguous()
                h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        out.append({"role": role, "checkpoint": os.path.basename(d), "sha256": h.hexdigest()})
    return sorted(out, key=lambda r: (r["role"], r["checkpoint"]))


def compare(a_path: str, b_path: str) -> int:
    a, b = pq.read_table(a_path).to_pylist(), pq.read_table(b_path).to_pylist()
    by_case = lambda rows: {(r["case"], r["kind"]): [json.loads(x["record"]) for x in rows
                                                     if (x["case"], x["kind"]) == (r["case"], r["kind"])]
                            for r in rows}
    ca, cb = by_case(a), by_case(b)
    diffs, extra_keys, values = [], set(), 0
    for group in sorted(set(ca) | set(cb)):
        ra, rb = ca.get(group, []), cb.get(group, [])
        if len(ra) != len(rb):
            diffs.append((group, "-", "record count", len(ra), len(rb)))
        for i, (x, y) in enumerate(zip(ra, rb)):
            extra_keys |= set(x) ^ set(y)
            for k in sorted(set(x) & set(y)):
                values += 1
                if not _same(x[k], y[k]):
                    diffs.append((group, i, k, x[k], y[k]))
    print(f"{len(a)} vs {len(b)} records; {values} values compared; {len(diffs)} differing")
    if extra_keys:
        print(f"keys in only one file (not compared): {sorted(extra_keys)}")
    for group, i, k, x, y in diffs[:10]:
        print(f"  {group[0]} {group[1]}[{i}] {k}: {str(x)[:60]} != {str(y)[:60]}")
    return 0 if not diffs else 1


def _same(x, y) -> bool:
    """Equal to the last bit; NaN equals NaN (the only value not equal to itself)."""
    return x == y or (x != x and y != y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=("write", "compare"))
    ap.add_argument("paths", nargs="+", help="write: OUT; compare: BEFORE AFTER")
    args = ap.parse_args()
    if len(args.paths) != (1 if args.cmd == "write" else 2):
        ap.error(f"{args.cmd} takes {'one path' if args.cmd == 'write' else 'two paths'}")
    sys.exit(write(args.paths[0]) if args.cmd == "write" else compare(*args.paths))


if __name__ == "__main__":
    main()
