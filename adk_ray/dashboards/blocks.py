"""The parts of the page below the header, each from the results: HTML strings with figures.

Every block takes `figs` (which turns a figure into a numbered div) and `notices` (where it says
what it left out), so page.py can draw each one independently of the others."""
from __future__ import annotations

from html import escape

import pandas as pd

from . import fragments
from .figures.boxes import section_figure
from .figures.curves import MAX_SETTINGS as CURVE_SETTINGS
from .figures.curves import curves_figure, metric_curves, selection_curves, selection_value_columns
from .figures.mog import density_figure, reward_histogram_figure
from .figures.trajectory import MAX_SETTINGS as TRAJ_SETTINGS
from .figures.trajectory import settings as trajectory_settings
from .figures.trajectory import trajectory_figure
from .models import representative_pictures
from .mog import Geometry
from adk_ray.worlds.mog.geometry import DEFAULT_SPACING
from .premise import premise_sections
from .sections import plan_sections, select_rows, setting_labels, x_labels
from .style import axis_label
from .summary import compare, summarize


def ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"] if "status" in rows else rows


def comparisons(rows: pd.DataFrame, sweep: dict | None, notices: list[str]):
    """Per boxplot section (one per swept axis): (section, summary, comparison, x order); summary and
    comparison are None for a section with no finished final models yet."""
    for sec in plan_sections(sweep, rows):
        df = select_rows(sec, rows, notices)
        labels, order = x_labels(sec, df)
        if df.empty or not order:
            yield sec, None, None, order
            continue
        summ = summarize(df, labels, order)
        if len(summ) and summ["n"].min() < 5:
            notices.append("Some boxes have fewer than 5 seeds: their bootstrap CIs are too coarse to read much into.")
        yield sec, summ, compare(summ, order), order


def verdicts(rows: pd.DataFrame, sweep: dict | None, notices: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(section title, comparison) of each section with data: what the 'At a glance' table counts."""
    return [(sec.title, comp) for sec, _, comp, _ in comparisons(rows, sweep, notices) if comp is not None]


def boxplot_sections(rows: pd.DataFrame, sweep: dict | None, figs, notices: list[str]) -> list[str]:
    """The answer: 'at a glance' counts, then per swept axis its boxplots and table of medians."""
    section_html, glance = [], []
    for sec, summ, comp, order in comparisons(rows, sweep, notices):
        section_html.append(f"<h2>{escape(sec.title)}</h2>")
        if comp is None:
            section_html.append("<div class='notice'>No finished final models for this section yet.</div>")
            continue
        glance.append((sec.title, comp))
        section_html.append(figs.html(section_figure(summ, order, axis_label(sec.axis))))
        section_html.append(fragments.comparison_table(comp, order, axis_label(sec.axis)))
    if not section_html:
        return ["<div class='notice'>No finished trials yet: boxplots appear as trials finish.</div>"]
    top = ["<h2>At a glance</h2>" + fragments.glance_table(glance)] if glance else []
    return top + section_html


def learning_curves(rows: pd.DataFrame, figs, notices: list[str]) -> list[str]:
    """Metric vs alignment step (stage 'curve'), one setting at a time."""
    ok = ok_rows(rows)
    if ok.empty or "stage" not in ok or "step" not in ok:
        return []
    curves = ok[ok["stage"] == "curve"].dropna(subset=["step"])
    if curves.empty:
        return []
    labels, order = setting_labels(curves)
    long, names = metric_curves(curves, labels)
    if not names:
        return []
    if len(order) > CURVE_SETTINGS:
        notices.append(f"Learning curves: offering {CURVE_SETTINGS} of {len(order)} settings.")
    return ["<h2>Learning curves</h2><div class='muted'>Median across seeds, band = IQR"
            + ("; the dropdown picks the setting." if len(order) > 1 else ".") + "</div>",
            figs.html(curves_figure(long, names, order, "alignment step"))]


def llm_figures(rows: pd.DataFrame, figs, notices: list[str]) -> list[str]:
    """LLM world: the Figure 5 trajectory and the model-selection curves, when such rows exist."""
    ok = ok_rows(rows)
    if ok.empty or "world" not in ok or "stage" not in ok:
        return []
    llm = ok[ok["world"] == "llm"]
    out = []
    staged = llm[llm["stage"].isin(["p_prime", "p_dprime", "aligned", "final"])]
    if (staged["stage"] == "final").any():
        n = len(trajectory_settings(staged))
        if n > TRAJ_SETTINGS:
            notices.append(f"Trajectory: showing {TRAJ_SETTINGS} of {n} settings.")
        out += ["<h2>Trajectories (Figure 5)</h2><div class='muted'>Mean over seeds; marker size = "
                "cross-seed standard deviation (mean of both coordinates').</div>",
                figs.html(trajectory_figure(staged))]
    sel = llm[llm["stage"] == "selection_curve"]
    if len(sel) and "step" in sel:
        others = llm[llm["stage"] != "selection_curve"]
        labels, order = setting_labels(sel, exclude=tuple(selection_value_columns(sel, others)))
        long, names = selection_curves(sel, labels, others)
        if names:
            out += ["<h2>Model selection</h2><div class='muted'>Curves the selection rules read "
                    "(median across seeds, band = IQR).</div>",
                    figs.html(curves_figure(long, names, order, "step"))]
    return out


def _geometry(sweep: dict | None, target: str | None = None) -> Geometry:
    """The world a MoG sweep ran in, from its fixed settings (the paper's where unset); `target` wins."""
    fixed = (sweep or {}).get("fixed") or {}
    return Geometry(target=target or str(fixed.get("target", "single")),
                    spacing=float(fixed.get("grid_spacing", DEFAULT_SPACING)),
                    reward_scale=float(fixed.get("reward_scale", 10.0)), reward_alpha=float(fixed.get("reward_alpha", 2.0)))


def premise(rows: pd.DataFrame, sweep: dict | None, notices: list[str]) -> list[str]:
    """MoG: seeds whose p″ lost the target, and K-A vs A-K split by that (premise.py)."""
    return premise_sections(rows, _geometry(sweep), notices)


def mog_pictures(models: pd.DataFrame, sweep: dict | None, figs, notices: list[str]) -> list[str]:
    """The paper's Figures 1 and 2 from the stored mixture parameters."""
    pictures, n_settings = representative_pictures(models)
    if not pictures:
        return []
    if n_settings > len(pictures):
        notices.append(f"MoG pictures: showing {len(pictures)} of {n_settings} KD settings.")
    out = ["<h2>The low-recall trap in pictures (Figures 1 and 2)</h2>"
           "<div class='muted'>Densities of p*, p′ and p″ for the smallest seed; green circle = target "
           "mode; × = component means (size ∝ weight). Histograms: reward of samples from each "
           "reference model (the sampling trap: p″ rarely visits the target).</div>"]
    for pic in pictures:
        out.append(f"<h3>{escape(pic.label)} · seed {pic.seed}</h3>")
        geometry = _geometry(sweep, pic.target)
        out.append(figs.html(density_figure(pic.p_prime, pic.p_dprime, geometry)))
        out.append(figs.html(reward_histogram_figure(pic.p_prime, pic.p_dprime, geometry)))
    return out
