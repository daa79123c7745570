"""A report as a document: pages of HTML fragments with figure and table markers, written as one
self-contained HTML file (figures as inline SVG from kaleido, or interactive Plotly) and printed to PDF.

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
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from dashboard.widgets import export

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


    def page(self, title: str, subtitle: str, body: str) -> None:
        self.pages.append(ReportPage(title, f"<header><h2>{html.escape(title)}</h2><p>{html.escape(subtitle)}</p>"
                                            f"</header>{body}"))

    def figure(self, key: str, figure: go.Figure, width: int, height: int | None = None) -> str:
        """Register a figure; its place in a page is a marker replaced when the HTML is written."""
        figure.update_layout(width=width, height=height or figure.layout.height)
        self.figures[key] = figure
        return f"<figure><!--figure:{key}--></figure>"

    def table(self, key: str, frame: pd.DataFrame, css: str = "", digits: int = 4) -> str:
        """Register a table (the numbers behind a figure) and return its HTML."""
        self.tables[key] = frame
        formatted = frame.copy()
        for column in formatted.columns:
            if column == "age":
                formatted[column] = formatted[column].map(lambda v: "" if pd.isna(v) else f"{float(v):g}")
            elif pd.api.types.is_float_dtype(formatted[column]):
                formatted[column] = formatted[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
        table = formatted.to_html(index=False, escape=True, border=0, classes=css or None, na_rep="")
        if "wide" in css:       # rotated column heads keep a 20-column matrix on one page
            table = table.replace("<th>", "<th class='col'>").replace(
                "<th class='col'>" + html.escape(frame.columns[0]), "<th>" + html.escape(frame.columns[0]), 1)
        return f"<!--table:{key}-->{table}"


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
