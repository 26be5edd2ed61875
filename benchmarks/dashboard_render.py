"""Render time of the sweep dashboard on a synthetic 10,000-row results store.

    python benchmarks/dashboard_render.py [--rows 10000] [--repeats 3] [--keep DIR]

Builds the store in a temporary directory (docs/results.md layout: one Parquet file per trial,
MoG models, sweep.json), then times `write_dashboard` end to end (read, aggregate, bootstrap,
figures, HTML, atomic write). The sweep service calls it after finished trials, so it should stay
at a few seconds at most.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import tempfile
import time

import pyarrow.parquet as pq

from adk_ray.dashboards import write_dashboard
from adk_ray.dashboards.synthetic import write_synthetic_results

OK_TRIALS = 10       # synthetic store: 11 trials, one of them failed
CURVE_STEPS = 10
ROWS_PER_TRIAL_SEED = 6 + 2 * CURVE_STEPS  # p′×2, p″, p′_AK, final×2, curve rows per pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000, help="at least this many metric rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", default=None, help="build the store here and keep it (default: a temp dir)")
    args = ap.parse_args()

    seeds = -(-args.rows // (OK_TRIALS * ROWS_PER_TRIAL_SEED))
    root = args.keep or tempfile.mkdtemp(prefix="adk_dashboard_bench_")
    t = time.perf_counter()
    write_synthetic_results(root, seeds=seeds, curve_steps=CURVE_STEPS)
    build = time.perf_counter() - t
    n_rows = sum(pq.read_metadata(f).num_rows for f in glob.glob(os.path.join(root, "data", "*.parquet")))

    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = write_dashboard(root)
        times.append(time.perf_counter() - t)
    size = os.path.getsize(out) / 1e6
    print(f"store: {n_rows} rows ({seeds} seeds × 11 trials), built in {build:.1f}s")
    print(f"render: median {statistics.median(times):.2f}s, min {min(times):.2f}s, max {max(times):.2f}s "
          f"over {len(times)} runs (first includes reading plotly.js); page {size:.1f} MB")
    if args.keep:
        print(f"kept: {out}")
    else:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
