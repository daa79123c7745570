"""One-click report of the current view: a self-contained HTML file and a PDF printed from it.

``build`` lays out the views the pages show (``dashboard.views``) as pages; ``document`` writes
them as HTML (figures as kaleido SVG, tables as HTML) and prints the PDF with Chromium; this
module caches the two files of a request for the download buttons.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from dashboard import data
from dashboard.report.build import ReportRequest, build_report, provenance_frame, provenance_preview
from dashboard.report.document import (PAGE_CSS, PDF_TIMEOUT_S, Report, ReportPage, ReportUnavailable, html_to_pdf,
                                       pdf_available, report_html)

__all__ = ["PAGE_CSS", "PDF_TIMEOUT_S", "Report", "ReportFiles", "ReportPage", "ReportRequest", "ReportUnavailable",
           "build_report", "html_to_pdf", "pdf_available", "provenance_frame", "provenance_preview", "report_files",
           "report_html", "report_html_bytes", "report_pdf"]


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
