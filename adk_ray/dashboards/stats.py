"""Box statistics and the bootstrap CI of the A-K minus K-A difference of medians."""
from __future__ import annotations

import numpy as np

BOOTSTRAP_SEED = 0
"""Fixed so that re-rendering the same data gives the same page."""
N_BOOT = 2000


def box_stats(values) -> dict:
    """Quartiles and Tukey fences of finite values, as plotly's precomputed box fields.

    Computed here (numpy's linear interpolation) rather than in the browser so that the boxes,
    the hover text and the table of medians all show the same numbers.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        nan = float("nan")
        return {"n": 0, "q1": nan, "median": nan, "q3": nan, "lowerfence": nan, "upperfence": nan}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    iqr = q3 - q1
    # Whiskers end at the most extreme observations within 1.5 IQR of the box (Tukey).
    lo = v[v >= q1 - 1.5 * iqr].min()
    hi = v[v <= q3 + 1.5 * iqr].max()
    return {"n": int(v.size), "q1": float(q1), "median": float(med), "q3": float(q3),
            "lowerfence": float(lo), "upperfence": float(hi)}


def bootstrap_median_diff(ka, ak, n_boot: int = N_BOOT, level: float = 0.95,
                          seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """median(ak) − median(ka) and its percentile-bootstrap CI at `level`.

    The two pipelines are resampled independently (unpaired): seeds of K-A and A-K share p′, but a
    sweep need not run the same seeds for both, and the unpaired interval is the conservative one.
    Returns NaNs when either side has no finite value, and a NaN interval when either side has a
    single one (resampling one value gives a zero-width interval that would claim certainty).
    """
    a = np.asarray(ka, dtype=float)
    b = np.asarray(ak, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    nan = float("nan")
    if a.size == 0 or b.size == 0:
        return nan, nan, nan
    diff = float(np.median(b) - np.median(a))
    if a.size < 2 or b.size < 2:
        return diff, nan, nan
    rng = np.random.default_rng(seed)
    # One (n_boot, n) index draw per side: vectorised, ~1 ms for 20 seeds.
    ma = np.median(a[rng.integers(0, a.size, size=(n_boot, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(mb - ma, [alpha, 1.0 - alpha])
    return diff, float(lo), float(hi)


def verdict(lo: float, hi: float) -> str:
    """'A-K' if the CI lies above 0, 'K-A' if below, '' if it straddles 0 or is undefined.

    Every metric of the dashboard is higher-is-better (reward and log-likelihoods)."""
    if lo > 0:
        return "A-K"
    if hi < 0:
        return "K-A"
    return ""
