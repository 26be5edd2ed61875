"""Bit-identity check for refactors of the MoG world: run a fixed set of short configs, store every row
and every stored model parameter in one Parquet file, and compare two such files exactly.

    python benchmarks/mog_equality.py write /tmp/before.parquet       # on the old code
    python benchmarks/mog_equality.py write /tmp/after.parquet        # on the new code
    python benchmarks/mog_equality.py compare /tmp/before.parquet /tmp/after.parquet

The configs cover every aligner, every KD method (as kd_method and as A-K's final_kd_method), single
and double target, n_final_modes 3 and 4, learning curves (eval_every), several seeds, and configs
batched together in one `run_batch` (different β, β_KD and iteration lists). Short stages (60 SFT and
KD steps, ≤ 40 alignment steps) keep the whole run under a minute. `compare` matches rows by their
identifying columns and demands equal floats to the last bit (NaN equal to NaN); it exits 1 on any
difference. Columns only one file has are listed, not compared (a change that adds columns by design).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

from adk_ray.pipeline.cache import StageCache
from adk_ray.pipeline.mog import run_batch
from adk_ray.worlds.mog.config import MoGTrialConfig

SHORT = dict(sft_iterations=60, kd_iterations=60, eval_samples=512, batch_size=64, seeds=(0, 1, 2))
KEY = ("case", "kind", "algorithm", "pipeline", "stage", "beta", "iterations", "kd_beta", "n_final_modes",
       "target", "kd_method", "final_kd_method", "seed", "step")


def cases() -> dict[str, list[MoGTrialConfig]]:
    """Name -> the configs one `run_batch` call runs together."""
    base = MoGTrialConfig(**SHORT)
    out: dict[str, list[MoGTrialConfig]] = {}
    for algo in ("ppo", "grpo", "dpo_online", "dpo_offline"):
        c = base.replace(algorithm=algo, beta=0.5, iterations=(15, 30), eval_every=10)
        out[f"{algo}/batched"] = [c, c.replace(beta=2.0, iterations=(20,), kd_beta=5.0)]
        out[f"{algo}/k3_double"] = [c.replace(n_final_modes=3, target="double", iterations=(25,))]
    for kd in ("pad_vpd", "pad_ppd"):
        c = base.replace(algorithm="grpo", beta=1.0, iterations=(12,), eval_every=6)
        out[f"kd={kd}"] = [c.replace(kd_method=kd)]
        out[f"final_kd={kd}"] = [c.replace(final_kd_method=kd, algorithm="dpo_online")]
    out["ppo/epochs2_std"] = [base.replace(algorithm="ppo", ppo_epochs=2, ppo_minibatches=2, iterations=(40,))]
    out["grpo/std_normalize"] = [base.replace(algorithm="grpo", grpo_std_normalize=True, iterations=(40,),
                                              seeds=(4, 7))]
    out["dpo_offline/pairs"] = [base.replace(algorithm="dpo_offline", dpo_offline_pairs=300, iterations=(35,),
                                             beta=0.1)]
    return out


def write(path: str) -> None:
    rows = []
    t0 = time.perf_counter()
    for name, cfgs in cases().items():
        res = run_batch(cfgs, StageCache())
        rows += [{"case": name, "kind": "row", **_plain(r)} for r in res.rows]
        rows += [{"case": name, "kind": "model", **_plain(m)} for m in res.models]
        print(f"{name:22s} {len(res.rows):4d} rows {len(res.models):4d} models", flush=True)
    table = pa.Table.from_pylist([{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()}
                                  for r in rows])
    pq.write_table(table, path)
    print(f"{len(rows)} records in {time.perf_counter() - t0:.1f} s -> {path}")


def _plain(d: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in d.items()}


def compare(a_path: str, b_path: str) -> int:
    a, b = pq.read_table(a_path).to_pylist(), pq.read_table(b_path).to_pylist()
    cols_a, cols_b = set(a[0]), set(b[0])
    if cols_a ^ cols_b:
        print(f"only in {a_path}: {sorted(cols_a - cols_b)}; only in {b_path}: {sorted(cols_b - cols_a)}")
    common = sorted(cols_a & cols_b)
    key = lambda r: tuple(str(r.get(k)) for k in KEY)
    index_a, index_b = {}, {}
    for rows, index in ((a, index_a), (b, index_b)):
        for r in rows:
            if key(r) in index:
                raise SystemExit(f"duplicate key {key(r)}")
            index[key(r)] = r
    missing = sorted(set(index_a) ^ set(index_b))
    diffs = []
    for k in sorted(set(index_a) & set(index_b)):
        ra, rb = index_a[k], index_b[k]
        for c in common:
            if not _same(ra[c], rb[c]):
                diffs.append((k, c, ra[c], rb[c]))
    floats = sum(_count_floats(index_a[k][c]) for k in index_a if k in index_b for c in common)
    print(f"{len(index_a)} vs {len(index_b)} records; {len(missing)} unmatched; {floats} floats compared; "
          f"{len(diffs)} differing values")
    for k, c, x, y in diffs[:10]:
        print(f"  {k[0]} {k[2:7]} seed={k[12]} step={k[13]} {c}: {str(x)[:60]} != {str(y)[:60]}")
    for k in missing[:10]:
        print(f"  unmatched: {k}")
    return 0 if not diffs and not missing else 1


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y  # floats: exact; model parameters are compared as their JSON text (repr of each float)


def _count_floats(v) -> int:
    if isinstance(v, float):
        return 1
    if isinstance(v, str) and v.startswith("["):
        return v.count(",") + 1
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write").add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "write":
        write(args.out)
    else:
        sys.exit(compare(args.a, args.b))


if __name__ == "__main__":
    main()
