"""One-click report of the current view: a self-contained HTML file and a PDF printed from it.

What it holds (one A4-landscape page each, in this order): the provenance (store, run,
model checksum, method parameters, cohort filter, date); the global heat map and its
numbers; the chosen class's distributions and their summary; the outliers (anomaly vs
Dice, and the ranking); one page per chosen case with its three slices and its local
importances next to the cohort mean. Every figure is a Plotly figure of
``dashboard.figures`` exported by kaleido as SVG (vector, text kept), every table is
an HTML table of the numbers behind the figures. All reads go through
``dashboard.data`` / ``dashboard.compute`` / ``dashboard.case_view``.

PDF: headless Chromium (``--print-to-pdf``) prints the same HTML. Chromium is already
the one dependency of the figure export (kaleido drives it), it lays out HTML and SVG
exactly as the browser showed them, and it honours CSS paged media (``@page`` size,
``break-after: page``), so the PDF is the HTML page for page. Pure-Python alternatives
(WeasyPrint needs Pango and renders SVG with its own engine; ReportLab would mean a
second layout of every page) would add a dependency and a second renderer to keep
faithful.
"""
from __future__ import annotations

import base64
import html
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from agg2exp_core.analysis.ordering import group_order
from agg2exp_core.vocabulary import AVERAGE_TARGET, MASS_KIND_TITLES
from dashboard import analytics, case_view, compute, data, figures
from dashboard.widgets import export
from dashboard.imaging import slices
from dashboard.analytics import Roi
from dashboard.filters import CohortFilter, describe_filter

PDF_TIMEOUT_S = 120
PAGE_CSS = """
@page { size: A4 landscape; margin: 11mm 12mm; }
* { box-sizing: border-box; }
body { font-family: Inter, Helvetica, Arial, sans-serif; font-size: 9pt; color: #222; margin: 0; }
section.page { break-after: page; height: 186mm; overflow: hidden; }
section.page:last-of-type { break-after: auto; }
header { border-bottom: 1px solid #ccc; margin-bottom: 3mm; }
header h2 { font-size: 13pt; margin: 0 0 1mm 0; }
header p { font-size: 7.5pt; color: #666; margin: 0 0 1.5mm 0; }
h1 { font-size: 20pt; margin: 0 0 2mm 0; }
figure { margin: 0; }
figure img { display: block; margin: 0 auto; max-width: 100%; max-height: 160mm; }
.row { display: flex; gap: 3mm; align-items: flex-start; }
.row figure { flex: 1 1 0; }
.row figure img { max-height: 112mm; }
table { border-collapse: collapse; font-size: 7pt; margin-top: 2mm; }
th, td { border: 1px solid #ddd; padding: 0.6mm 1.4mm; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
table.wide th.col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
table.provenance th { text-align: left; }
table.provenance td { text-align: left; white-space: normal; max-width: 200mm; word-break: break-all; }
p.note { font-size: 7.5pt; color: #555; }
ol.contents { font-size: 9pt; }
"""


class ReportUnavailable(RuntimeError):
    """The PDF cannot be made here (no Chromium, or it failed); the message says why."""


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
class ReportPage:
    title: str
    body: str


@dataclass
class Report:
    """A built report: its pages (HTML fragments), the figures and the tables they show."""

    title: str
    created_at: datetime
    pages: list[ReportPage] = field(default_factory=list)
    figures: dict[str, go.Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def html(self, static: bool = True) -> str:
        """The whole report as one self-contained HTML document (figures as inline SVG images when
        ``static``, else interactive Plotly with plotly.js embedded once)."""
        body = "\n".join(f"<section class='page'>{_fill_figures(p.body, self.figures, static)}</section>"
                         for p in self.pages)
        script = "" if static else "<script>" + _plotly_js() + "</script>"
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                f"</title><style>{PAGE_CSS}</style>{script}</head><body>{body}</body></html>")


# --- building ------------------------------------------------------------------------------------

def build_report(ref: data.StoreRef, request: ReportRequest, now: datetime | None = None) -> Report:
    """Read what the request names from the store and lay it out as pages."""
    run = _run(ref, request.run_id)
    rois = analytics.roi_table(data.rois(ref))
    cases = data.cohort_cases(ref, request.run_id, request.cohort)
    cohort_text = describe_filter(request.cohort)
    target = _class_roi(rois, run, request.target)
    report = Report(f"Agg2Exp report · {request.run_id} · {cohort_text}", now or datetime.now(timezone.utc))
    provenance = analytics.provenance_text(request.run_id, str(run["method"]), cohort_text, len(cases))
    _provenance_page(report, ref, request, run, cases, cohort_text, target)
    _heat_map_pages(report, ref, request, provenance)
    _distribution_pages(report, ref, request, rois, target, cohort_text, run)
    _outlier_pages(report, ref, request, rois, target, cohort_text, run)
    for case_id in request.case_ids:
        _case_page(report, ref, request, run, rois, target, case_id, provenance)
    return report


def _run(ref: data.StoreRef, run_id: str) -> pd.Series:
    runs = data.runs(ref)
    if run_id not in set(runs.run_id):
        raise ValueError(f"run {run_id!r} is not in the store {ref.path}")
    return runs.set_index("run_id", drop=False).loc[run_id]


def _class_roi(rois: dict[int, Roi], run: pd.Series, name: str) -> Roi:
    by_name = {r.name: r for r in rois.values()}
    if name not in by_name:
        raise ValueError(f"class {name!r} is not a RoI of this store")
    return by_name[name]


def _page(report: Report, title: str, subtitle: str, body: str) -> None:
    report.pages.append(ReportPage(title, f"<header><h2>{html.escape(title)}</h2><p>{html.escape(subtitle)}</p>"
                                          f"</header>{body}"))


def _figure(report: Report, key: str, figure: go.Figure, width: int, height: int | None = None) -> str:
    """Register a figure; its place in a page is a marker replaced when the HTML is written."""
    figure.update_layout(width=width, height=height or figure.layout.height)
    report.figures[key] = figure
    return f"<figure><!--figure:{key}--></figure>"


def _table(report: Report, key: str, frame: pd.DataFrame, css: str = "", digits: int = 4) -> str:
    report.tables[key] = frame
    formatted = frame.copy()
    for column in formatted.columns:
        if column == "age":
            formatted[column] = formatted[column].map(lambda v: "" if pd.isna(v) else f"{float(v):g}")
        elif pd.api.types.is_float_dtype(formatted[column]):
            formatted[column] = formatted[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    table = formatted.to_html(index=False, escape=True, border=0, classes=css or None, na_rep="")
    if "wide" in css:       # rotated column heads keep a 20-column matrix on one page
        table = table.replace("<th>", "<th class='col'>").replace("<th class='col'>" + html.escape(frame.columns[0]),
                                                                  "<th>" + html.escape(frame.columns[0]), 1)
    return f"<!--table:{key}-->{table}"


def provenance_preview(ref: data.StoreRef, request: ReportRequest) -> pd.DataFrame:
    """The provenance table the report opens with, as it stands now (shown on the page before a download)."""
    run = _run(ref, request.run_id)
    target = _class_roi(analytics.roi_table(data.rois(ref)), run, request.target)
    cases = data.cohort_cases(ref, request.run_id, request.cohort)
    return provenance_frame(ref, request, run, cases, describe_filter(request.cohort), target,
                            datetime.now(timezone.utc))


def provenance_frame(ref, request, run, cases, cohort_text, target, created_at: datetime) -> pd.DataFrame:
    """Field/value rows: store, run, model checksum, method parameters, cohort filter, dates."""
    info = ref.path and Path(ref.path).stat()
    rows = [("store", f"{request.store_label or ref.name} ({ref.path})"),
            ("store version", f"modified {datetime.fromtimestamp(info.st_mtime, timezone.utc):%Y-%m-%d %H:%M:%S} UTC,"
                              f" {info.st_size} bytes"),
            ("run id", request.run_id), ("method", analytics.method_label(run["method"], run["params"] or {})),
            ("method parameters", json.dumps(run["params"] or {}, sort_keys=True, default=str)),
            ("model sha256", str(run["model_sha256"])), ("code version", str(run.get("code_version") or "")),
            ("run created at (UTC)", str(run.get("created_at") or "")),
            ("cohort filter", cohort_text), ("cases in the cohort", f"{len(cases)} of {int(run['n_cases'])} in the run"),
            ("mass kind", MASS_KIND_TITLES[request.kind]), ("class", target.name),
            ("heat-map order", request.order), ("case slices", f"window {_window_text(request.window)}, attribution "
                                                               f"below P{request.percentile:g} of |value| hidden"),
            ("cases shown", ", ".join(request.case_ids) or "none"),
            ("report created (UTC)", f"{created_at:%Y-%m-%d %H:%M:%S}")]
    return pd.DataFrame(rows, columns=["field", "value"])


def _provenance_page(report, ref, request, run, cases, cohort_text, target) -> None:
    frame = provenance_frame(ref, request, run, cases, cohort_text, target, report.created_at)
    contents = "".join(f"<li>{html.escape(t)}</li>" for t in _planned_titles(request, target))
    body = (f"<h1>Agg2Exp Studio report</h1><p>Run <b>{html.escape(request.run_id)}</b> · cohort: "
            f"<b>{html.escape(cohort_text)}</b> · {len(cases)} cases</p>"
            + _table(report, "provenance", frame, "provenance") + f"<ol class='contents'>{contents}</ol>")
    _page(report, "Provenance", f"Agg2Exp Studio · {report.created_at:%Y-%m-%d %H:%M} UTC", body)


def _planned_titles(request: ReportRequest, target: Roi) -> list[str]:
    return (["Global heat map", "Global heat map: values", f"Class distributions: {target.name}",
             f"Class distributions: {target.name}, summary", "Outliers: anomaly vs Dice", "Outliers: ranking"]
            + [f"Case {c}" for c in request.case_ids])


def _heat_map_pages(report, ref, request, provenance) -> None:
    label = MASS_KIND_TITLES[request.kind]
    matrix = compute.global_matrix_view(ref, request.run_id, request.cohort, request.kind, request.order)
    if matrix.is_empty:
        note = f"<p class='note'>No {html.escape(label)} values for this run and cohort.</p>"
        _page(report, "Global heat map", provenance, note)
        _page(report, "Global heat map: values", provenance, note)
        return
    title = f"Global RoI importance ({label}), ordered by {request.order}"
    figure = figures.matrix_heatmap(matrix, title, provenance, value_label=label, with_trees=False)
    _page(report, "Global heat map", provenance, _figure(report, "heat_map", figure, 1150, 720))
    wide = pd.DataFrame(matrix.matrix, columns=[s.name for s in matrix.sources])
    wide.insert(0, "target a \\ source b", [t.name for t in matrix.targets])
    _page(report, "Global heat map: values", f"Mean {label} e(b → a) over the cohort · {provenance}",
          _table(report, "heat_map_values", wide, "wide", digits=3)
          + f"<p class='note'>Cases per cell: {int(matrix.counts.min())}–{int(matrix.counts.max())}.</p>")


def _distribution_pages(report, ref, request, rois, target, cohort_text, run) -> None:
    label = MASS_KIND_TITLES[request.kind]
    distribution = data.source_distribution(ref, request.run_id, request.cohort, target.roi_id, request.kind)
    boxes = distribution.boxes
    provenance = analytics.provenance_text(request.run_id, str(run["method"]), cohort_text,
                                           int(boxes.n.max()) if len(boxes) else 0)
    titles = (f"Class distributions: {target.name}", f"Class distributions: {target.name}, summary")
    if boxes.empty:
        for title in titles:
            _page(report, title, provenance, f"<p class='note'>No {html.escape(label)} values of "
                                             f"{html.escape(target.name)} for this cohort.</p>")
        return
    sources = [rois[i] for i in boxes.source_id if i in rois]
    sources = [sources[i] for i in group_order([s.grp for s in sources])]
    figure = figures.class_boxplot(boxes, distribution.points, sources, target,
                                   f"Importance of each source RoI for {target.name} ({label})", provenance, label)
    _page(report, titles[0], provenance, _figure(report, "class_distributions", figure, 1150, 640))
    summary = analytics.distribution_summary(boxes, "source_id", {s.roi_id: s.name for s in sources})
    order = {s.name: i for i, s in enumerate(sources)}
    summary = summary.sort_values("roi", key=lambda c: c.map(order)).reset_index(drop=True)
    dice = data.dice_distribution(ref, request.run_id, request.cohort).boxes
    dice = dice[dice.class_id == target.roi_id]
    note = (f"<p class='note'>Dice of {html.escape(target.name)} over these cases: median {float(dice['median'].iloc[0]):.3f}, "
            f"IQR {float(dice.q1.iloc[0]):.3f}–{float(dice.q3.iloc[0]):.3f} (n = {int(dice.n.iloc[0])}).</p>"
            if len(dice) else "")
    _page(report, titles[1], provenance, _table(report, "class_distribution_summary", summary) + note)


def _outlier_pages(report, ref, request, rois, target, cohort_text, run) -> None:
    targets = data.anomaly_targets(ref, request.run_id)
    titles = ("Outliers: anomaly vs Dice", "Outliers: ranking")
    if not targets:
        for title in titles:
            _page(report, title, request.run_id, "<p class='note'>This run has no anomaly scores "
                                                 "(<code>python -m agg2exp_core analyze</code>).</p>")
        return
    target_id = target.roi_id if target.roi_id in targets else (AVERAGE_TARGET if AVERAGE_TARGET in targets
                                                                else targets[0])
    name = analytics.roi_name(rois, target_id)
    ranking = data.anomaly_ranking(ref, request.run_id, request.cohort, target_id)
    provenance = analytics.provenance_text(request.run_id, str(run["method"]), cohort_text, len(ranking))
    dice_label = "mean Dice over classes" if target_id == AVERAGE_TARGET else f"Dice of {name}"
    if ranking.empty:
        for title in titles:
            _page(report, title, provenance, "<p class='note'>No anomaly scores for the cases of this cohort.</p>")
        return
    figure = figures.anomaly_scatter(ranking, f"Anomaly score vs Dice · {name}", provenance, dice_label)
    spearman = data.anomaly_dice(ref, request.run_id)
    row = spearman[spearman.target_id == target_id]
    note = (f"<p class='note'>Spearman ρ (anomaly vs Dice, whole run): {float(row.spearman_rho.iloc[0]):.3f}, "
            f"p = {float(row.p_value.iloc[0]):.3g}, n = {int(row.n.iloc[0])}.</p>" if len(row) else "")
    _page(report, titles[0], provenance, _figure(report, "outliers", figure, 1150, 560) + note)
    shown = ranking.head(request.outlier_rows)[["rank", "case_id", "score", "is_outlier", "dice", "dataset", "sex",
                                                "age", "pathologies"]]
    _page(report, titles[1], f"Top {len(shown)} of {len(ranking)} by anomaly score for {name} · {provenance}",
          _table(report, "outlier_ranking", shown.reset_index(drop=True), digits=3))


def _case_page(report, ref, request, run, rois, target, case_id, provenance) -> None:
    title = f"Case {case_id}"
    relative = data.artifact_cases(ref, request.run_id).get(case_id)
    path = data.resolve_artifact(ref, relative) if relative else None
    parts = []
    if path is None:
        parts.append("<p class='note'>No slice artefact for this case in this run.</p>")
    else:
        channel = list(run["label_names"]).index(target.name) if target.name in list(run["label_names"]) else None
        mtime = path.stat().st_mtime_ns
        artifact = case_view.artifact_of(str(path), mtime)
        voxel = case_view.start_voxel(artifact, channel)
        _, width, level = request.window
        style = slices.OverlayStyle(width=width, level=level, show_gt=artifact.gt is not None,
                                    hide_below_percentile=request.percentile, pred_outline=True,
                                    label_opacity=0.36, attr_opacity=0.6)
        params_json = json.dumps(run["params"] or {}, sort_keys=True, default=str)
        row = []
        for view in slices.VIEWS:
            shown = case_view.slice_view(str(path), mtime, view, voxel, channel, target.name, style,
                                         str(run["method"]), params_json, f"{request.run_id} · case {case_id}",
                                         crosshair=False, clickable=False)
            row.append(_figure(report, f"case_{case_id}_{view}", go.Figure(shown.figure), 520))
        parts.append("<div class='row'>" + "".join(row) + "</div>")
        unit = slices.attribution_unit(str(run["method"]), run["params"] or {})[1]
        parts.append(f"<p class='note'>Slices through the largest cross-sections of {html.escape(target.name)}; "
                     f"prediction outlined in label colours, ground truth in white; window "
                     f"{html.escape(_window_text(request.window))}. {html.escape(unit)}</p>")
    parts.append(_case_numbers(report, ref, request, rois, target, case_id))
    _page(report, title, _case_line(ref, request, case_id) + " · " + provenance, "".join(parts))


def _window_text(window: tuple[str, float, float]) -> str:
    name, width, level = window
    return f"{name} · W{width:g} / L{level:g}".replace("L-", "L−")


def _case_numbers(report, ref, request, rois, target, case_id) -> str:
    """The case's row e(b → target) next to the cohort mean, sources as columns."""
    local = data.case_matrix(ref, request.run_id, case_id, request.kind)
    local = local[local.target_id == target.roi_id].set_index("source_id").value
    mean = data.global_matrix(ref, request.run_id, request.cohort, request.kind)
    mean = mean[mean.target_id == target.roi_id].set_index("source_id")["mean"]
    sources = sorted(set(local.index) | set(mean.index))
    sources = [sources[i] for i in group_order([rois[s].grp for s in sources])]
    frame = pd.DataFrame([["this case"] + [local.get(s, np.nan) for s in sources],
                          ["cohort mean"] + [mean.get(s, np.nan) for s in sources]],
                         columns=[f"e(b → {target.name})"] + [rois[s].name for s in sources])
    return _table(report, f"case_{case_id}_values", frame, "wide", digits=3)


def _case_line(ref, request, case_id) -> str:
    cases = data.cohort_cases(ref, request.run_id, CohortFilter()).set_index("case_id")
    if case_id not in cases.index:
        return f"case {case_id}"
    row = cases.loc[case_id]
    age = "age ?" if pd.isna(row.age) else f"{row.age:g} y"
    return f"{case_id} · {row.dataset} · {row.sex if isinstance(row.sex, str) else 'sex ?'} · {age}"


# --- HTML and PDF --------------------------------------------------------------------------------

def _fill_figures(body: str, figs: dict[str, go.Figure], static: bool) -> str:
    for key, figure in figs.items():
        marker = f"<!--figure:{key}-->"
        if marker not in body:
            continue
        if static:
            svg = export.figure_to_bytes(figure, "svg", int(figure.layout.width), int(figure.layout.height), 1)
            content = (f"<img alt='{html.escape(key)}' src='data:image/svg+xml;base64,"
                       f"{base64.b64encode(svg).decode('ascii')}'>")
        else:
            content = figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        body = body.replace(marker, content)
    return body


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def report_html(report: Report) -> str:
    """Static figures (kaleido SVG) when Chromium is there, interactive Plotly otherwise."""
    return report.html(static=export.chromium_path() is not None)


def html_to_pdf(document: str, timeout_s: int = PDF_TIMEOUT_S) -> bytes:
    """Print an HTML document to PDF with headless Chromium (A4 landscape from the page CSS)."""
    chromium = export.chromium_path()
    if chromium is None:
        raise ReportUnavailable("the PDF report needs Chromium (apt-get install chromium); the HTML report works "
                                "without it")
    with tempfile.TemporaryDirectory(prefix="agg2exp-report-") as tmp:
        source, target = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        source.write_text(document, encoding="utf-8")
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                   "--disable-background-networking", "--disable-component-update", "--no-pdf-header-footer",
                   "--run-all-compositor-stages-before-draw", "--virtual-time-budget=20000",
                   f"--user-data-dir={Path(tmp) / 'profile'}", f"--print-to-pdf={target}", source.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                  env=dict(os.environ, HOME=tmp))
        except subprocess.TimeoutExpired:
            raise ReportUnavailable(f"Chromium took longer than {timeout_s} s to print the report") from None
        if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise ReportUnavailable("Chromium could not print the report: " + (lines[-1] if lines else
                                                                               f"exit {done.returncode}"))
        return target.read_bytes()


def pdf_available() -> bool:
    return export.chromium_path() is not None


@dataclass(frozen=True)
class ReportFiles:
    html: bytes
    pdf: bytes | None
    problem: str          # why there is no PDF ("" when there is one)
    n_pages: int


@st.cache_data(max_entries=4, show_spinner="Building the report…")
def report_files(ref: data.StoreRef, request: ReportRequest) -> ReportFiles:
    """HTML and PDF of a request (cached: the second download of the same view is instant)."""
    report = build_report(ref, request)
    document = report_html(report)
    try:
        pdf, problem = html_to_pdf(document), ""
    except ReportUnavailable as err:
        pdf, problem = None, str(err)
    return ReportFiles(document.encode("utf-8"), pdf, problem, len(report.pages))


def report_pdf(ref: data.StoreRef, request: ReportRequest) -> bytes:
    """The PDF of a request (for a deferred download button); raises ReportUnavailable without one."""
    files = report_files(ref, request)
    if files.pdf is None:
        raise ReportUnavailable(files.problem)
    return files.pdf


def report_html_bytes(ref: data.StoreRef, request: ReportRequest) -> bytes:
    return report_files(ref, request).html
