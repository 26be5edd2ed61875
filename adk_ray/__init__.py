"""adk_ray: align before distilling (A-K) or after (K-A)? Sweeps on Ray Tune, results as Parquet.

    import adk_ray
    df = adk_ray.run_sweep("mog_ppo", smoke=True)      # what `python -m adk_ray.sweep mog_ppo --smoke` runs
    df = adk_ray.load_results("results/mog_ppo")       # any sweep's rows, local or s3://

The names below load on first use (PEP 562), so `import adk_ray` stays light: no Ray, no torch.
"""
from __future__ import annotations

__all__ = ["run_sweep", "load_results", "SweepError"]


def __getattr__(name: str):
    if name in __all__:
        from adk_ray import api
        return getattr(api, name)
    raise AttributeError(f"module 'adk_ray' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
