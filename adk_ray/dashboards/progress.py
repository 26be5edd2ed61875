"""How far the sweep is: trial counts and the failed trials with their error text."""
from __future__ import annotations

import pandas as pd

from .style import BOOKKEEPING


def trial_counts(rows: pd.DataFrame, sweep: dict | None) -> dict:
    """done = trials with ok rows; failed = trials with error rows and none ok (a retried trial
    that later succeeded is done); running/pending = total − done − failed (None without sweep.json)."""
    done_ids: set = set()
    failed_ids: set = set()
    if not rows.empty and "trial_id" in rows and "status" in rows:
        done_ids = set(rows.loc[rows["status"] == "ok", "trial_id"])
        failed_ids = set(rows.loc[rows["status"] == "error", "trial_id"]) - done_ids
    total = _total(sweep or {})
    pending = max(total - len(done_ids) - len(failed_ids), 0) if total is not None else None
    return {"done": len(done_ids), "failed": len(failed_ids), "pending": pending, "total": total}


def failed_trials(rows: pd.DataFrame) -> list[dict]:
    """One entry per failed trial: its id, its swept parameters and the error text."""
    if rows.empty or "status" not in rows:
        return []
    err = rows[rows["status"] == "error"]
    if "trial_id" in rows:
        err = err[~err["trial_id"].isin(set(rows.loc[rows["status"] == "ok", "trial_id"]))]
    out = []
    key = "trial_id" if "trial_id" in err else None
    for tid, g in (err.groupby(key, sort=True) if key else [("?", err)]):
        first = g.iloc[0]
        params = {c: first[c] for c in g.columns if c not in BOOKKEEPING
                  and pd.api.types.is_scalar(first[c]) and pd.notna(first[c])}
        if "pipeline" in g:
            params["pipeline"] = "/".join(sorted(g["pipeline"].dropna().astype(str).unique()))
        errors = g["error"].dropna().astype(str).unique().tolist() if "error" in g else []
        out.append({"trial_id": str(tid), "params": params,
                    "seeds": sorted(g["seed"].dropna().astype(int).unique().tolist()) if "seed" in g else [],
                    "error": "\n---\n".join(errors) or "(no error text)"})
    return out


def _total(sweep: dict) -> int | None:
    """Planned trial count: `trials` as a number, or as the list of planned trials (the service
    writes that, with `trial_count` beside it)."""
    for key in ("trial_count", "trials"):
        v = sweep.get(key)
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            return int(v)
        if isinstance(v, list):
            return len(v)
    return None
