"""`python -m adk_ray.dashboard RESULTS_DIR [-o FILE]`: render a sweep's dashboard to one HTML file."""
from __future__ import annotations

import argparse
import sys
import time

from adk_ray.dashboards import write_dashboard


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adk_ray.dashboard", description=__doc__)
    ap.add_argument("results_dir", help="a sweep's results directory (local path or pyarrow URI), "
                                        "e.g. results/mog_ppo")
    ap.add_argument("-o", "--out", default=None, help="output HTML file (default RESULTS_DIR/dashboard.html)")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    path = write_dashboard(args.results_dir, args.out)
    print(f"wrote {path} in {time.perf_counter() - t:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
