"""`<storage>/index.html`: one page linking every sweep's dashboard in a storage root, each with its
one-line hypothesis, its trial counts and its 'At a glance' verdict table (the dashboard's own)."""
from __future__ import annotations

import datetime as _dt
import posixpath
from html import escape

import pyarrow.fs as pafs

from adk_ray.storage import atomic_write, open_storage

from . import blocks, fragments
from .load import load_results
from .progress import trial_counts

INDEX = "index.html"


def sweep_dirs(storage: str) -> list[str]:
    """Names of the folders directly under `storage` that hold a sweep (a sweep.json), sorted."""
    fs, root = open_storage(storage)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    names = [posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(root))
             if i.type == pafs.FileType.Directory]
    return sorted(n for n in names if fs.get_file_info(posixpath.join(root, n, "sweep.json")).type == pafs.FileType.File)


def under(storage: str, name: str) -> str:
    """`<storage>/<name>`, a path or URI (a sweep's folder, as the results store names it, or a file)."""
    return storage.rstrip("/") + "/" + name


def sweep_entry(storage: str, name: str) -> str:
    """One sweep's part of the index: its name (a link to its dashboard), hypothesis, counts, verdicts."""
    res = load_results(under(storage, name))
    sweep = res.sweep or {}
    notices: list[str] = []
    c = trial_counts(res.rows, res.sweep)
    counts = f"{c['done']} of {c['total'] if c['total'] is not None else '?'} trials done" + (
        f", {c['failed']} failed" if c["failed"] else "")
    facts = [f"world {escape(str(sweep.get('world', '?')))}", counts] + (["smoke run"] if sweep.get("smoke") else [])
    table = fragments.glance_table(blocks.verdicts(res.rows, res.sweep, notices)) or \
        "<div class='notice'>No finished final models yet.</div>"
    return (f"<h2 id='{escape(name)}'><a href='{escape(name)}/dashboard.html'>{escape(name)}</a></h2>"
            f"<div class='hyp'>{escape(str(sweep.get('hypothesis') or ''))}</div>"
            f"<div class='muted'>{' · '.join(facts)}</div>{table}")


def render_index(storage: str) -> str:
    names = sweep_dirs(storage)
    toc = "".join(f"<li><a href='#{escape(n)}'>{escape(n)}</a></li>" for n in names)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>adk_ray sweeps</title>"
            f"<style>{fragments.CSS}</style></head><body><h1>Sweeps</h1>"
            f"<div class='muted'>{len(names)} sweep(s) in <code>{escape(storage)}</code>; each name opens its "
            "dashboard. Tables: per boxplot section, in how many settings A-K or K-A is higher "
            "(bootstrap 95% CI of the difference of medians).</div>"
            f"<ul>{toc}</ul>" + "\n".join(sweep_entry(storage, n) for n in names)
            + f"<p class='muted'>Rendered {stamp} by adk_ray.dashboards.index.</p></body></html>")


def index_exists(storage: str) -> bool:
    fs, root = open_storage(storage)
    return fs.get_file_info(posixpath.join(root, INDEX)).type == pafs.FileType.File


def write_index(storage: str) -> str:
    """Write `<storage>/index.html` (atomically, as write_dashboard does); return its path."""
    data = render_index(storage).encode("utf-8")
    fs, root = open_storage(storage)
    path = posixpath.join(root, INDEX)
    atomic_write(path, lambda f: f.write(data), fs)
    return under(storage, INDEX) if "://" in storage else path
