"""`python -m adk_ray.dashboard DIR [-o FILE]`: render a sweep's dashboard to one HTML file; on a storage
root (the folder holding the sweeps' folders), every sweep's dashboard and the root's index.html."""
from __future__ import annotations

import argparse
import sys
import time

from adk_ray.dashboards import write_dashboard
from adk_ray.dashboards.index import sweep_dirs, under, write_index
from adk_ray.dashboards.page import PLOTLY_JS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adk_ray.dashboard", description=__doc__)
    ap.add_argument("results_dir", help="a sweep's results directory (local path or pyarrow URI), "
                                        "e.g. results/mog_ppo, or a storage root, e.g. results")
    ap.add_argument("-o", "--out", default=None, help="output HTML file of one sweep (default RESULTS_DIR/dashboard.html)")
    ap.add_argument("--plotly-js", choices=PLOTLY_JS, default="inline",
                    help="embed plotly.js in each page (inline) or load the one copy ../plotly.min.js (shared)")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    sweeps = sweep_dirs(args.results_dir)
    if sweeps and not args.out:  # a storage root: its sweeps' folders hold sweep.json, it holds none itself
        for name in sweeps:
            write_dashboard(under(args.results_dir, name), plotly_js=args.plotly_js)
        path = write_index(args.results_dir)
        print(f"wrote {len(sweeps)} dashboards and {path} in {time.perf_counter() - t:.2f}s")
        return 0
    path = write_dashboard(args.results_dir, args.out, plotly_js=args.plotly_js)
    print(f"wrote {path} in {time.perf_counter() - t:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
