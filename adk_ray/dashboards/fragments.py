"""HTML pieces of the page that are not figures: header, progress, tables, failures.

Everything from the data is escaped: error text is arbitrary exception output."""
from __future__ import annotations

from html import escape

import pandas as pd

from .style import METRIC_LABELS, METRICS, fmt_num, fmt_value

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:12px 24px;color:#222}
h1{margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{margin:1em 0 .3em}
.muted{color:#666}.hyp{font-style:italic;margin:.3em 0 .8em}
.counts{display:flex;gap:12px;margin:.6em 0}.count{padding:8px 14px;border-radius:6px;background:#f3f3f3;font-size:15px}
.count b{font-size:22px;display:block}.count.done b{color:#2a7d2a}.count.failed b{color:#b22}.count.pending b{color:#a67c00}
.bar{height:8px;background:#eee;border-radius:4px;overflow:hidden;display:flex;max-width:600px}
.bar span{display:block;height:100%}.notice{background:#fff6d6;border:1px solid #e6cf7a;padding:6px 10px;border-radius:4px;margin:4px 0}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f6f6f6}td.x,th.x{text-align:left}.ak{background:#d7e7f5}.ka{background:#f8d7d7}
.legend-ka{color:#d62728;font-weight:bold}.legend-ak{color:#1f77b4;font-weight:bold}
pre{white-space:pre-wrap;background:#f8f8f8;padding:6px;max-height:300px;overflow:auto;font-size:12px}
details{margin:.4em 0}
"""

# Tiny glue only: record JS errors so a test (or a curious reader) can see them.
ERROR_HOOK = ("<script>window.__dashboardErrors=[];window.addEventListener('error',"
              "function(e){window.__dashboardErrors.push(String(e.message))});</script>")


def header(sweep: dict | None, rows: pd.DataFrame, results_dir: str) -> str:
    s = sweep or {}
    name = s.get("name") or (rows["sweep"].dropna().iloc[0] if "sweep" in rows and rows["sweep"].notna().any() else "sweep")
    parts = [f"<h1>{escape(str(name))}</h1>"]
    if s.get("hypothesis"):
        parts.append(f"<div class='hyp'>{escape(str(s['hypothesis']))}</div>")
    facts = []
    if s.get("world"):
        facts.append(f"world <b>{escape(str(s['world']))}</b>")
    if "algorithm" in rows and rows["algorithm"].notna().any():
        facts.append("algorithm <b>" + escape(", ".join(sorted(rows["algorithm"].dropna().astype(str).unique()))) + "</b>")
    if s.get("smoke"):
        facts.append("<b>smoke run</b> (shrunken grid: directions only, not the paper's numbers)")
    if s.get("seeds") is not None:
        seeds = s["seeds"]
        facts.append(f"seeds <b>{len(seeds) if isinstance(seeds, (list, tuple)) else escape(str(seeds))}</b>")
    if s.get("fixed"):
        facts.append("fixed: " + escape(", ".join(f"{k}={fmt_value(v)}" for k, v in s["fixed"].items())))
    facts.append(f"results <code>{escape(results_dir)}</code>")
    parts.append("<div class='muted'>" + " · ".join(facts) + "</div>")
    return "\n".join(parts)


def counts_block(c: dict) -> str:
    total = c["total"]
    pending = "?" if c["pending"] is None else c["pending"]
    items = [("done", c["done"], "done"), ("pending", pending, "running / pending"),
             ("failed", c["failed"], "failed"), ("", "?" if total is None else total, "total")]
    html = "<div class='counts'>" + "".join(
        f"<div class='count {cls}' id='count-{label.split()[0]}'><b>{val}</b>{label}</div>" for cls, val, label in items) + "</div>"
    if total:
        w = [100 * c["done"] / total, 100 * c["failed"] / total]
        html += (f"<div class='bar'><span style='width:{w[0]:.1f}%;background:#4a4'></span>"
                 f"<span style='width:{w[1]:.1f}%;background:#c33'></span></div>")
    return html


def notices_block(notices: list[str]) -> str:
    return "".join(f"<div class='notice'>{escape(n)}</div>" for n in dict.fromkeys(notices))


def glance_table(verdicts: list[tuple[str, pd.DataFrame]]) -> str:
    """Sections × metrics: in how many settings the CI says A-K is higher, K-A is higher, or neither."""
    if not verdicts:
        return ""
    head = "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in METRICS)
    body = []
    for title, comp in verdicts:
        cells = []
        for m in METRICS:
            c = comp[comp["metric"] == m] if len(comp) else comp
            ak, ka = int((c["verdict"] == "A-K").sum()) if len(c) else 0, int((c["verdict"] == "K-A").sum()) if len(c) else 0
            n = len(c)
            cls = "ak" if ak > ka else "ka" if ka > ak else ""
            cells.append(f"<td class='{cls}'>A-K higher {ak} · K-A higher {ka} · unclear {n - ak - ka}</td>")
        body.append(f"<tr><td class='x'>{escape(title)}</td>{''.join(cells)}</tr>")
    return (f"<table class='glance'><tr><th class='x'>section</th>{head}</tr>{''.join(body)}</table>"
            "<div class='muted'>Counts of x-axis settings whose bootstrap 95% CI of the difference of medians "
            "(A-K − K-A) excludes 0. Every metric is higher-is-better.</div>")


def comparison_table(comp: pd.DataFrame, order: list[str], x_title: str) -> str:
    if comp.empty:
        return ""
    head1 = f"<tr><th class='x' rowspan='2'>{escape(x_title)}</th>" + "".join(
        f"<th colspan='3'>{METRIC_LABELS[m]}</th>" for m in METRICS) + "<th rowspan='2'>seeds<br>K-A / A-K</th></tr>"
    head2 = "<tr>" + "<th class='legend-ka'>K-A</th><th class='legend-ak'>A-K</th><th>Δ A-K − K-A [95% CI]</th>" * len(METRICS) + "</tr>"
    idx = {(r.x, r.metric): r for r in comp.itertuples()}
    body = []
    for x in order:
        cells, n = [], ""
        for m in METRICS:
            r = idx.get((x, m))
            if r is None:
                cells.append("<td>–</td><td>–</td><td>–</td>")
                continue
            cls = {"A-K": "ak", "K-A": "ka"}.get(r.verdict, "")
            cells.append(f"<td>{fmt_num(r.ka)}</td><td>{fmt_num(r.ak)}</td>"
                         f"<td class='{cls}'>{fmt_num(r.diff)} [{fmt_num(r.lo)}, {fmt_num(r.hi)}]</td>")
            n = n or f"{r.n_ka} / {r.n_ak}"
        body.append(f"<tr><td class='x'>{escape(x)}</td>{''.join(cells)}<td>{n}</td></tr>")
    return f"<table class='medians'>{head1}{head2}{''.join(body)}</table>"


def failures_block(failed: list[dict]) -> str:
    if not failed:
        return ""
    items = []
    for f in failed:
        params = ", ".join(f"{k}={fmt_value(v)}" for k, v in f["params"].items())
        seeds = f" · seeds {', '.join(map(str, f['seeds']))}" if f["seeds"] else ""
        first = f["error"].strip().splitlines()[-1] if f["error"].strip() else ""
        items.append(f"<details class='failure'><summary><code>{escape(f['trial_id'])}</code> {escape(params)}{escape(seeds)}"
                     f" — <b>{escape(first[:200])}</b></summary><pre>{escape(f['error'][:20000])}</pre></details>")
    return "<h2 id='failed'>Failed trials</h2>" + "".join(items)
