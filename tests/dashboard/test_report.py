"""The report of the current view: pages, figures, tables, provenance; PDF pages and text (pypdf)."""
from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import compute, data, report
from dashboard.widgets import export
from dashboard.filters import CohortFilter, describe_filter

ROOT = Path(__file__).resolve().parents[2]
COHORT = CohortFilter(datasets=("external",), sexes=("F",))
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def built(synthetic_store):
    ref = data.store_ref(synthetic_store["path"])
    run_id = synthetic_store["run_ids"]["vg"]
    cases = data.cohort_cases(ref, run_id, COHORT)
    with_slices = [c for c in cases.case_id if c in data.artifact_cases(ref, run_id)][:1]
    request = report.ReportRequest(run_id=run_id, cohort=COHORT, target="heart", case_ids=tuple(with_slices),
                                   store_label="synthetic")
    built = report.build_report(ref, request, now=NOW)
    return {"ref": ref, "request": request, "report": built, "n_cases": len(cases)}


def test_report_pages_hold_provenance_figures_and_tables(built):
    rep, request = built["report"], built["request"]
    titles = [p.title for p in rep.pages]
    assert titles[:7] == ["Provenance", "Global heat map", "Global heat map: values", "Class distributions: heart",
                          "Class distributions: heart, summary", "Outliers: anomaly vs Dice", "Outliers: ranking"]
    assert titles[7:] == [f"Case {c}" for c in request.case_ids] and len(request.case_ids) == 1
    provenance = dict(rep.tables["provenance"].values.tolist())
    run = data.runs(built["ref"]).set_index("run_id").loc[request.run_id]
    assert provenance["run id"] == request.run_id and provenance["model sha256"] == run.model_sha256
    assert provenance["cohort filter"] == describe_filter(COHORT) == "dataset: external · sex: F"
    assert provenance["report created (UTC)"] == "2026-12-01 09:30:00"
    assert str(built["ref"].path) in provenance["store"]
    assert json.loads(provenance["method parameters"]) == run.params
    assert provenance["cases in the cohort"].startswith(f"{built['n_cases']} of ")
    expected = {"heat_map", "class_distributions", "outliers"} | {f"case_{c}_{v}" for c in request.case_ids
                                                                  for v in ("axial", "coronal", "sagittal")}
    assert set(rep.figures) == expected


def test_report_tables_are_the_numbers_behind_the_figures(built):
    rep, request, ref = built["report"], built["request"], built["ref"]
    matrix = compute.global_matrix_view(ref, request.run_id, COHORT, "abs", "group")
    values = rep.tables["heat_map_values"]
    np.testing.assert_allclose(values.drop(columns=values.columns[0]).to_numpy(dtype=float), matrix.matrix)
    assert values.iloc[:, 0].tolist() == [t.name for t in matrix.targets]
    heatmap = rep.figures["heat_map"].data[0]
    np.testing.assert_allclose(np.asarray(heatmap.z, dtype=float), matrix.matrix)
    ranking = rep.tables["outlier_ranking"]
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1)) and len(ranking) <= request.outlier_rows
    assert ranking.score.is_monotonic_decreasing
    cases = set(data.cohort_cases(ref, request.run_id, COHORT).case_id)
    assert set(ranking.case_id) <= cases                                  # the filter applies
    summary = rep.tables["class_distribution_summary"]
    assert (summary.n <= len(cases)).all() and {"median", "q25", "q75", "mean"} <= set(summary.columns)
    case_values = rep.tables[f"case_{request.case_ids[0]}_values"]
    assert case_values.iloc[:, 0].tolist() == ["this case", "cohort mean"]


@pytest.fixture(scope="module")
def document(built) -> str:
    """The static HTML (kaleido SVG figures), made once for the HTML and the PDF tests."""
    if export.chromium_path() is None:
        pytest.skip("static figure export and the PDF need Chromium")
    return built["report"].html(static=True)


def test_report_html_embeds_every_figure_and_table(built, document):
    rep = built["report"]
    assert document.count("<img alt=") == len(rep.figures)
    assert document.count("data:image/svg+xml;base64,") == len(rep.figures)
    assert document.count("<table") == len(rep.tables)
    assert document.count("<section class='page'>") == len(rep.pages)
    assert built["request"].run_id in document and "dataset: external · sex: F" in document
    assert "<!--figure:" not in re.sub(r"<!--table:[^>]*-->", "", document)     # every marker was filled


def test_report_pdf_has_one_page_per_section_with_run_and_filter(built, document):
    pypdf = pytest.importorskip("pypdf")
    rep, request = built["report"], built["request"]
    reader = pypdf.PdfReader(io.BytesIO(report.html_to_pdf(document)))
    assert len(reader.pages) == len(rep.pages) == 8
    texts = [page.extract_text() for page in reader.pages]
    for text, page in zip(texts, rep.pages):
        assert text.startswith(page.title), (page.title, text[:80])
    assert request.run_id in texts[0] and "dataset: external · sex: F" in texts[0]
    assert "model sha256" in texts[0]
    width, height = float(reader.pages[0].mediabox.width), float(reader.pages[0].mediabox.height)
    assert width > height and abs(width - 841.9) < 2                     # A4 landscape


def test_pdf_without_chromium_says_so(monkeypatch):
    monkeypatch.setattr(export, "chromium_path", lambda: None)
    with pytest.raises(report.ReportUnavailable, match="needs Chromium"):
        report.html_to_pdf("<html></html>")


def test_report_page_offers_both_downloads(monkeypatch, synthetic_store):
    monkeypatch.setenv("AGG2EXP_DB", str(synthetic_store["path"]))
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params.update({"target": "heart", "dataset": "external"})
    app.run()
    app.switch_page("app_pages/report.py").run()
    assert not app.exception, [e.message for e in app.exception]
    labels = [b.proto.label for b in app.get("download_button")]
    assert "Report (HTML)" in labels and ("Report (PDF)" in labels or export.chromium_path() is None)
    assert app.multiselect(key="report_cases").value, "no case suggested for the slices"
    assert "case **" in app.markdown[0].value and "pages, A4 landscape" in app.markdown[0].value
    provenance = dict(app.dataframe[0].value[["field", "value"]].values)   # the report's first page, shown now
    assert provenance["class"] == "heart" and "external" in provenance["cohort filter"]
    assert provenance["run id"] in synthetic_store["run_ids"].values() and provenance["model sha256"]
