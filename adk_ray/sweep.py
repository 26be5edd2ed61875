"""`python -m adk_ray.sweep NAME`: run a sweep (see docs/sweeps.md, or --help)."""
from adk_ray.service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
