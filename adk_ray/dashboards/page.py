"""Assemble the dashboard page from a results store and write it atomically."""
from __future__ import annotations

import datetime as _dt
import os
import posixpath
import traceback
from html import escape

import plotly.io as pio
import pyarrow.fs as pafs
import plotly.offline

from adk_ray.storage import atomic_write, open_storage

from . import blocks, fragments, samples
from .load import Results, load_results
from .progress import failed_trials, trial_counts

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
PLOTLY_JS = ("inline", "shared")
"""Where a page finds plotly.js: inline (one self-contained 5 MB file, the default), or shared: the page
loads `../plotly.min.js`, one copy next to the sweeps' folders for every page of a storage (a gallery
of many pages, still working offline)."""
SHARED_PLOTLY = "plotly.min.js"


class _Figures:
    """Turns figures into divs numbered fig-1, fig-2, ... so ids are stable across renders."""

    def __init__(self):
        self.n = 0

    def html(self, fig) -> str:
        self.n += 1
        return pio.to_html(_compact(fig.to_dict()), full_html=False, include_plotlyjs=False, div_id=f"fig-{self.n}",
                           config=PLOT_CONFIG, validate=False)


def _compact(value, digits: int = 6):
    """Floats of a figure's data to `digits` significant digits, far more than a plot or a 3-digit hover
    shows: full float reprs made up half of a page's bytes (numpy arrays go out as base64 already)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _compact(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_compact(v, digits) for v in value]
    return value


def _guarded(what: str, notices: list[str], build) -> list[str]:
    """One block's HTML, or a notice if it failed: a bad row must not cost the page its other parts
    (the service re-renders mid-sweep, when data can be odd)."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001
        last = traceback.extract_tb(e.__traceback__)[-1]
        notices.append(f"Could not draw {what}: {type(e).__name__}: {e} "
                       f"({os.path.basename(last.filename)}:{last.lineno})")
        return []


def render_html(results: Results, results_dir: str = "", plotly_js: str = "inline") -> str:
    """The whole page; plotly.js is inlined once in <head> (or loaded from the shared copy, PLOTLY_JS),
    figures reference it."""
    rows, sweep, notices = results.rows, results.sweep, list(results.notices)
    figs = _Figures()
    body = []
    body += _guarded("the premise", notices, lambda: blocks.premise(rows, sweep, notices))
    body += _guarded("the boxplots", notices, lambda: blocks.boxplot_sections(rows, sweep, figs, notices))
    body += _guarded("the learning curves", notices, lambda: blocks.learning_curves(rows, figs, notices))
    body += _guarded("the LLM figures", notices, lambda: blocks.llm_figures(rows, figs, notices))
    body += _guarded("the text samples", notices, lambda: samples.text_samples_block(results.samples, notices))
    body += _guarded("the MoG pictures", notices, lambda: blocks.mog_pictures(results.models, sweep, figs, notices))
    body += _guarded("the failed trials", notices, lambda: [fragments.failures_block(failed_trials(rows))])
    # The header comes last so it can show every notice the blocks raised.
    top = [fragments.header(sweep, rows, results_dir), fragments.counts_block(trial_counts(rows, sweep)),
           fragments.notices_block(notices)]
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    title = escape(str((sweep or {}).get("name") or "adk_ray sweep"))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title} — adk_ray dashboard</title><style>{fragments.CSS}</style>{fragments.ERROR_HOOK}"
        # plotly.js once, inline: the file opens offline and stays one file.
        + (f"<script type='text/javascript'>{_plotly_js()}</script>" if plotly_js == "inline"
           else f"<script type='text/javascript' src='../{SHARED_PLOTLY}'></script>")
        + "</head><body>"
        + "\n".join(top + body)
        + f"<p class='muted'>Rendered {stamp} by adk_ray.dashboards; {figs.n} figures. Boxes: quartiles and "
          "Tukey whiskers over seeds, one point per seed; K-A red, A-K blue.</p></body></html>"
    )


_PLOTLY_JS: str | None = None


def _plotly_js() -> str:
    """The bundled plotly.js (4.8 MB), read once per process: the service re-renders often."""
    global _PLOTLY_JS
    if _PLOTLY_JS is None:
        # A literal "</script>" inside the bundle would end the tag early.
        _PLOTLY_JS = plotly.offline.get_plotlyjs().replace("</script>", "<\\/script>")
    return _PLOTLY_JS


def write_dashboard(results_dir: str, out: str | None = None, plotly_js: str = "inline") -> str:
    """Render RESULTS_DIR's dashboard to `out` (default RESULTS_DIR/dashboard.html); return its path.
    With plotly_js="shared" the page loads ../plotly.min.js, written there if it is not there yet.

    Written to a temporary file in the same directory and renamed over the target, so a reader
    (or a browser refresh) never sees half a page even while the service re-renders it.
    RESULTS_DIR and `out` may be local paths or pyarrow filesystem URIs (file://, s3://, ...).
    """
    if plotly_js not in PLOTLY_JS:
        raise ValueError(f"plotly_js {plotly_js!r} is not one of {', '.join(PLOTLY_JS)}")
    data = render_html(load_results(results_dir), results_dir, plotly_js).encode("utf-8")
    if out is None:
        out = (results_dir.rstrip("/") + "/dashboard.html") if "://" in results_dir \
            else os.path.join(results_dir, "dashboard.html")
    fs, path = open_storage(out)
    if plotly_js == "shared":
        _write_shared_plotly(fs, posixpath.join(posixpath.dirname(posixpath.dirname(path)), SHARED_PLOTLY))
    atomic_write(path, lambda f: f.write(data), fs)
    return out if "://" in out else path


def _write_shared_plotly(fs, path: str) -> None:
    """plotly.js of this plotly version at `path`, unless that exact file is there already."""
    js = plotly.offline.get_plotlyjs().encode("utf-8")
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File and info.size == len(js):
        return
    atomic_write(path, lambda f: f.write(js), fs)
