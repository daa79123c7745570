"""The report of the current view, built from the views the pages show (no Streamlit).

What it holds (one A4-landscape page each, in this order): the provenance (store, run, model
checksum, method parameters, cohort filter, date); the global heat map (with the page's intervals
and dendrograms) and its numbers; the chosen class's distributions and their summary; the outliers
(anomaly vs Dice, and the ranking); the failure slices of the class (where the run has them: ranked,
the top slice's Dice in and out and its differing cells); one page per chosen case with its three slices and its local
importances next to the cohort mean. Titles, orders, Dice labels and windows come from the views,
so the report cannot drift from the pages.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from agg2exp_core.vocabulary import MASS_KIND_TITLES
from dashboard import analytics
from dashboard.analytics import Roi
from dashboard.context import ViewContext
from dashboard.filters import CohortFilter
from dashboard.report.document import Report
from dashboard.views import case_viewer, class_distributions, failure_modes, heat_map, outliers, sanity
from dashboard.views.common import open_context


@dataclass(frozen=True)
class ReportRequest:
    """The current view: what the report shows (all hashable, so a built report is cached by it)."""

    run_id: str
    cohort: CohortFilter
    target: str                       # class for distributions, outliers and case slices
    kind: str = "abs"
    case_ids: tuple[str, ...] = ()
    order: str = "group"
    window: tuple[str, float, float] = ("mediastinum", 350.0, 40.0)   # CT window of the case slices: name, W, L
    percentile: float = 80.0          # attribution threshold of the case slices
    store_label: str = ""
    outlier_rows: int = 15


@dataclass
class _Shown:
    """What every page of one report reads: its context, request and class."""

    ctx: ViewContext
    request: ReportRequest
    target: Roi


def build_report(ref, request: ReportRequest, now: datetime | None = None) -> Report:
    """Read what the request names from the store and lay it out as pages."""
    ctx = open_context(ref, request.run_id, request.cohort, request.store_label)
    shown = _Shown(ctx, request, ctx.roi_by_name(request.target))
    report = Report(f"Agg2Exp report · {request.run_id} · {ctx.cohort_text}", now or datetime.now(timezone.utc))
    _provenance_page(report, shown)
    _heat_map_pages(report, shown)
    _distribution_pages(report, shown)
    _outlier_pages(report, shown)
    _failure_page(report, shown)
    for case_id in request.case_ids:
        _case_page(report, shown, case_id)
    return report


def provenance_preview(ref, request: ReportRequest) -> pd.DataFrame:
    """The provenance table the report opens with, as it stands now (shown on the page before a download)."""
    ctx = open_context(ref, request.run_id, request.cohort, request.store_label)
    return provenance_frame(_Shown(ctx, request, ctx.roi_by_name(request.target)), datetime.now(timezone.utc))


def provenance_frame(shown: _Shown, created_at: datetime) -> pd.DataFrame:
    """Field/value rows: store, run, model checksum, method parameters, cohort filter, dates."""
    ctx, request, run = shown.ctx, shown.request, shown.ctx.run
    info = ctx.ref.path and Path(ctx.ref.path).stat()
    rows = [("store", f"{request.store_label or ctx.ref.name} ({ctx.ref.path})"),
            ("store version", f"modified {datetime.fromtimestamp(info.st_mtime, timezone.utc):%Y-%m-%d %H:%M:%S} UTC,"
                              f" {info.st_size} bytes"),
            ("run id", request.run_id), ("method", analytics.method_label(run["method"], ctx.params)),
            ("method parameters", json.dumps(ctx.params, sort_keys=True, default=str)),
            ("model sha256", str(run["model_sha256"])), ("code version", str(run.get("code_version") or "")),
            ("run created at (UTC)", str(run.get("created_at") or "")),
            ("cohort filter", ctx.cohort_text),
            ("cases in the cohort", f"{len(ctx.cases)} of {int(run['n_cases'])} in the run"),
            ("mass kind", MASS_KIND_TITLES[request.kind]), ("class", shown.target.name),
            ("heat-map order", request.order),
            ("case slices", f"window {case_viewer.window_text(request.window)}, attribution "
                            f"below P{request.percentile:g} of |value| hidden"),
            ("cases shown", ", ".join(request.case_ids) or "none"),
            ("sanity checks", sanity.run_summary(ctx)),
            ("report created (UTC)", f"{created_at:%Y-%m-%d %H:%M:%S}")]
    return pd.DataFrame(rows, columns=["field", "value"])


def _provenance_page(report: Report, shown: _Shown) -> None:
    ctx, request = shown.ctx, shown.request
    contents = "".join(f"<li>{html.escape(t)}</li>" for t in _planned_titles(shown))
    body = (f"<h1>Agg2Exp Studio report</h1><p>Run <b>{html.escape(request.run_id)}</b> · cohort: "
            f"<b>{html.escape(ctx.cohort_text)}</b> · {len(ctx.cases)} cases</p>"
            + report.table("provenance", provenance_frame(shown, report.created_at), "provenance")
            + f"<ol class='contents'>{contents}</ol>")
    report.page("Provenance", f"Agg2Exp Studio · {report.created_at:%Y-%m-%d %H:%M} UTC", body)


def _planned_titles(shown: _Shown) -> list[str]:
    name = shown.target.name
    return (["Global heat map", "Global heat map: values", f"Class distributions: {name}",
             f"Class distributions: {name}, summary", "Outliers: anomaly vs Dice", "Outliers: ranking"]
            + [f"Failure modes: {n}" for n in _failure_class(shown)[1:]]
            + [f"Case {c}" for c in shown.request.case_ids])


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>" if text else ""


def _heat_map_pages(report: Report, shown: _Shown) -> None:
    ctx = shown.ctx
    provenance = ctx.provenance()
    view = heat_map.global_map(ctx, heat_map.MapChoices(shown.request.kind, shown.request.order))
    if view.empty:
        for title in ("Global heat map", "Global heat map: values"):
            report.page(title, provenance, _note(view.empty))
        return
    report.page("Global heat map", provenance, report.figure("heat_map", view.figure, 1150, 720) + _note(view.caption))
    counts = view.matrix.counts
    report.page("Global heat map: values", f"Mean {view.value_label} e(b → a) over the cohort · {provenance}",
                report.table("heat_map_values", view.matrix.wide_table(), "wide", digits=3)
                + _note(f"Cases per cell: {int(counts.min())}–{int(counts.max())}."))


def _distribution_pages(report: Report, shown: _Shown) -> None:
    view = class_distributions.class_distributions(shown.ctx, shown.target, shown.request.kind)
    titles = (f"Class distributions: {shown.target.name}", f"Class distributions: {shown.target.name}, summary")
    if view.empty:
        for title in titles:
            report.page(title, view.provenance, _note(view.empty))
        return
    report.page(titles[0], view.provenance, report.figure("class_distributions", view.figure, 1150, 640)
                + _note(view.caption))
    report.page(titles[1], view.provenance, report.table("class_distribution_summary", view.summary)
                + _note(class_distributions.dice_note(shown.ctx, shown.target)))


def _outlier_pages(report: Report, shown: _Shown) -> None:
    ctx = shown.ctx
    titles = ("Outliers: anomaly vs Dice", "Outliers: ranking")
    target_id = outliers.target_for(ctx, shown.target.roi_id)
    if target_id is None:
        for title in titles:
            report.page(title, ctx.run_id, "<p class='note'>This run has no anomaly scores "
                                           "(<code>python -m agg2exp_core analyze</code>).</p>")
        return
    view = outliers.ranking(ctx, target_id)
    provenance = ctx.provenance(len(view.ranking))
    if view.empty:
        for title in titles:
            report.page(title, provenance, _note(view.empty))
        return
    report.page(titles[0], provenance, report.figure("outliers", view.figure, 1150, 560) + _note(view.spearman))
    top = view.top(shown.request.outlier_rows)
    report.page(titles[1], f"Top {len(top)} of {len(view.ranking)} by anomaly score for {view.name} · {provenance}",
                report.table("outlier_ranking", top, digits=3))


def _failure_class(shown: _Shown) -> tuple:
    """(class id, name) of the failure slices the report shows: the report's class where it has slices,
    else the first class with slices (all classes first); () when the run has no slice search."""
    classes = failure_modes.slice_classes(shown.ctx)
    if not classes:
        return ()
    class_id = shown.target.roi_id if shown.target.roi_id in classes else next(iter(classes))
    return class_id, classes[class_id]


def _failure_page(report: Report, shown: _Shown) -> None:
    """The ranked failure slices of one class, the top slice's Dice in and out and its differing cells."""
    chosen = _failure_class(shown)
    if not chosen:
        return
    ctx, class_id = shown.ctx, chosen[0]
    ranked = failure_modes.class_slices(ctx, class_id)
    top = failure_modes.slice_detail(ctx, class_id, ranked.slice_ids[0], ranked.table.slice.iloc[0])
    body = report.table("failure_slices", ranked.table, digits=3) + _note(ranked.caption)
    if top.dice_figure is not None:
        body += report.figure("failure_slice_dice", top.dice_figure, 700) + _note(top.caption)
    if len(top.cells):
        body += report.table("failure_slice_cells", top.cells, digits=3)
    report.page(f"Failure modes: {ranked.name}", ctx.provenance(), body)


def _case_page(report: Report, shown: _Shown, case_id: str) -> None:
    ctx, request, target = shown.ctx, shown.request, shown.target
    images = case_viewer.case_slices(ctx, case_id, target, request.window, request.percentile)
    row = "".join(report.figure(f"case_{case_id}_{view}", figure, 520) for view, figure in images.figures.items())
    body = (f"<div class='row'>{row}</div>" if row else "") + _note(images.note)
    local = case_viewer.local_matrix(ctx, case_id, request.kind)
    body += report.table(f"case_{case_id}_values", local.row(target), "wide", digits=3)
    report.page(f"Case {case_id}", case_viewer.run_case_line(ctx, case_id) + " · " + ctx.provenance(), body)
