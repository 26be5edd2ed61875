"""Read a sweep's results store (docs/results.md) into pandas, tolerating a sweep still running.

While a sweep runs, files appear one trial at a time, sweep.json may not be written yet and a
storage backend may show a file mid-upload. Every problem becomes a notice on the page rather than
an exception, because the sweep service re-renders the dashboard after each trial and a broken
render would hide every good result.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from adk_ray.storage import open_storage


@dataclass
class Results:
    rows: pd.DataFrame
    """Metric rows of data/*.parquet; empty DataFrame when there are none."""
    models: pd.DataFrame
    """Stored MoG models of models/*.parquet; empty DataFrame when there are none."""
    sweep: dict | None
    """The resolved sweep spec of sweep.json, or None."""
    notices: list[str] = field(default_factory=list)
    """What was missing or unreadable, shown at the top of the page."""
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    """LLM text samples of samples/*.parquet; empty DataFrame when there are none."""


def load_results(results_dir: str) -> Results:
    fs, root = open_storage(results_dir)
    notices: list[str] = []
    sweep = _read_json(fs, posixpath.join(root, "sweep.json"), notices)
    rows = _read_parquet_dir(fs, posixpath.join(root, "data"), "data", notices)
    # Only the MoG world stores models (for the density pictures); their absence elsewhere is normal.
    model_notices: list[str] = []
    models = _read_parquet_dir(fs, posixpath.join(root, "models"), "models", model_notices)
    if (sweep or {}).get("world") != "llm":
        notices.extend(model_notices)
    # Only the LLM world stores text samples; runs from before they existed have none.
    samples = _read_parquet_dir(fs, posixpath.join(root, "samples"), "samples", [])
    planned = _planned_trial_ids(sweep)
    if planned is not None and not rows.empty and "trial_id" in rows:
        # One folder collects every variant run into it (--smoke, --set): draw only the latest run's
        # trials, as sweep.json lists them, so a smoke run never mixes into the full sweep's boxes.
        other = ~rows["trial_id"].isin(planned)
        if other.any():
            notices.append(f"{rows.loc[other, 'trial_id'].nunique()} trial(s) in this folder belong to other runs "
                           "of the sweep (e.g. --smoke or --set variants) and are not drawn.")
            rows = rows[~other].reset_index(drop=True)
            if not models.empty and "trial_id" in models:
                models = models[models["trial_id"].isin(planned)].reset_index(drop=True)
    if planned is not None and not samples.empty and "trial_id" in samples:
        samples = samples[samples["trial_id"].isin(planned)].reset_index(drop=True)
    return Results(rows=rows, models=models, sweep=sweep, notices=notices, samples=samples)


def _planned_trial_ids(sweep: dict | None) -> set | None:
    """Trial ids of a grid sweep's latest run, from sweep.json's `trials` list; None when unknown
    (no sweep.json, a search, whose trials are known only as they finish, or a bare count)."""
    trials = (sweep or {}).get("trials")
    if (sweep or {}).get("search") or not isinstance(trials, list):
        return None
    ids = {t.get("trial_id") for t in trials if isinstance(t, dict)}
    return ids or None


def _read_parquet_dir(fs, path: str, what: str, notices: list[str]) -> pd.DataFrame:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        notices.append(f"No {what}/ directory yet: nothing of that kind has been written.")
        return pd.DataFrame()
    files = sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=False))
        # Only finished files: writers put temporaries under other names and rename them in.
        if f.type == pafs.FileType.File and f.path.endswith(".parquet")
        and not posixpath.basename(f.path).startswith(".")
    )
    if not files:
        notices.append(f"{what}/ holds no Parquet files yet.")
        return pd.DataFrame()
    # File by file, not one pyarrow dataset: files from different trials may carry different swept
    # columns, and one unreadable file must not hide the others.
    frames = []
    for f in files:
        try:
            frames.append(pq.read_table(f, filesystem=fs).to_pandas())
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            notices.append(f"Skipped unreadable file {posixpath.basename(f)}: {type(e).__name__}: {e}")
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


def _read_json(fs, path: str, notices: list[str]) -> dict | None:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        notices.append("No sweep.json: sections are inferred from the data and the trial total is unknown.")
    except Exception as e:  # noqa: BLE001
        notices.append(f"sweep.json is unreadable ({type(e).__name__}: {e}); sections are inferred from the data.")
    return None
