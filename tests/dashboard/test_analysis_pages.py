"""The analyses beyond the paper in the dashboard: Drift page, expected Dice, outlier reasons opening the
Case viewer, intervals on hover and in tables, method agreement; on a synthetic store analysed by the core."""
from __future__ import annotations

import json
import shutil

import numpy as np
import plotly.io as pio
import pytest

from agg2exp_core.analysis import quality, suite
from agg2exp_core.analysis.drift import DriftConfig
from agg2exp_core.analysis.outliers import AnalysisConfig
from dashboard import analytics, compute, data, figures
from dashboard.matrices import MatrixView
from dashboard.filters import CohortFilter
from apptest import charts, open_app, texts


@pytest.fixture(scope="module")
def analysed_store(synthetic_store, tmp_path_factory):
    """A copy of the synthetic store with every analysis of ``analyze`` (drift against 'reference')."""
    folder = tmp_path_factory.mktemp("analysed")
    path = folder / "store.duckdb"
    shutil.copyfile(synthetic_store["path"], path)
    shutil.copytree(synthetic_store["artifact_root"], folder / "artifacts")
    vg, smoothgrad = synthetic_store["run_ids"]["vg"], synthetic_store["run_ids"]["smoothgrad"]
    config = AnalysisConfig(fit_dataset="reference", fit_split="train")
    extensions = suite.SuiteConfig(drift=DriftConfig("reference", n_permutations=500),
                                   quality=quality.QualityConfig(fit_dataset="reference"))
    suite.analyze_run(path, vg, config, extensions)
    suite.analyze_run(path, smoothgrad, config, suite.SuiteConfig(quality=None, reasons=None, bootstrap=None))
    return {**synthetic_store, "path": path, "vg": vg, "smoothgrad": smoothgrad}


def downloads(app) -> set[str]:
    return {b.proto.label for b in app.get("download_button")}


@pytest.mark.slow   # > 15 s on 2 cores (make test-fast leaves it out)
def test_drift_page_shows_classes_cells_and_cases(monkeypatch, analysed_store):
    app = open_app(monkeypatch, analysed_store["path"], "drift", {"run": analysed_store["vg"]})
    assert app.title[0].value == "Explanation drift" and not app.error
    bars = pio.from_json(charts(app)[0].proto.spec)
    assert len(bars.data[0].x) == 17 and all(t.startswith("q=") for t in bars.data[0].text)
    assert any("classes drift at q < 0.05" in c for c in texts(app, "caption"))
    assert {"PNG", "SVG", "PDF", "CSV"} <= downloads(app)
    assert [h.value for h in app.subheader][:3] == ["Classes: dataset external vs reference", "The cells that moved",
                                                   "The cases that drift most"]
    case = app.selectbox(key="drift_case").value
    next(b for b in app.button if b.label == "Open in case viewer").click().run()
    assert app.title[0].value == "Case viewer" and app.query_params["case"] == case


def test_drift_page_tests_the_filtered_cohort_live(monkeypatch, analysed_store):
    app = open_app(monkeypatch, analysed_store["path"], "drift",
                   {"run": analysed_store["vg"], "drift_cohort": "filter", "sex": "F"})
    assert not app.exception and app.subheader[0].value.startswith("Classes: filtered cohort (sex: F")
    assert len(pio.from_json(charts(app)[0].proto.spec).data[0].x) == 17


def test_drift_page_without_a_drift_analysis_says_how(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "drift")
    assert any("--drift-reference DATASET" in t for t in texts(app, "info")) and not charts(app)


def test_outliers_show_expected_dice_and_reasons_that_open_the_case_viewer(monkeypatch, analysed_store):
    app = open_app(monkeypatch, analysed_store["path"], "outliers", {"run": analysed_store["vg"], "target": "heart"})
    assert not app.error
    table = app.dataframe[0].value
    assert {"expected_dice", "expected_low", "expected_high", "likely_failure"} <= set(table.columns)
    assert (table.expected_low <= table.expected_dice).all() and (table.expected_dice <= table.expected_high).all()
    case = app.selectbox(key="outlier_case").value
    assert any(h.value == f"Why is {case} an outlier?" for h in app.subheader)
    reasons = compute.reason_table(data.store_ref(analysed_store["path"]), analysed_store["vg"], case,
                                   analysed_store["roi_ids"]["heart"])
    assert len(reasons) and (reasons.target == "heart").all()
    assert reasons.contribution.is_monotonic_decreasing
    app.selectbox(key="reason_cell").set_value(0).run()
    next(b for b in app.button if b.label == "Open on this class and source").click().run()
    assert app.title[0].value == "Case viewer"
    assert app.query_params["source"] == reasons.source.iloc[0] and app.query_params["target"] == "heart"
    assert any(t.startswith(f"Opened on the cell {reasons.source.iloc[0]} → heart") for t in texts(app, "info"))
    assert any(c.startswith("Expected Dice without labels") for c in texts(app, "caption"))


def test_heat_map_intervals_on_hover_and_in_the_table(monkeypatch, analysed_store):
    app = open_app(monkeypatch, analysed_store["path"], "heat_map", {"run": analysed_store["vg"]})
    heat = next(t for t in pio.from_json(charts(app)[0].proto.spec).data if t.type == "heatmap")
    assert "95 % CI" in heat.hovertemplate and str(heat.customdata[0][0][-1]).startswith("[")
    assert any("bootstrap intervals over patients (1000 resamples)" in c for c in texts(app, "caption"))
    table = app.dataframe[0].value
    assert (table.ci_low <= table.iloc[:, 2] + 1e-12).all() and (table.iloc[:, 2] <= table.ci_high + 1e-12).all()
    app = open_app(monkeypatch, analysed_store["path"], "heat_map", {"run": analysed_store["vg"], "sex": "F"})
    assert any("(500 resamples)" in c for c in texts(app, "caption"))    # not stored: a live bootstrap


def test_comparison_has_intervals_of_the_differences(monkeypatch, analysed_store):
    app = open_app(monkeypatch, analysed_store["path"], "heat_map",
                   {"run": analysed_store["vg"], "view": "compare", "by": "sex", "a": "F", "b": "M", "perm": "1000"})
    heat = next(t for t in pio.from_json(charts(app)[0].proto.spec).data if t.type == "heatmap")
    assert "95 % CI of the difference" in heat.hovertemplate
    table = app.dataframe[0].value
    inside = (table.ci_low <= table.difference + 1e-12) & (table.difference <= table.ci_high + 1e-12)
    assert inside.all()
    heart_aorta = table[(table.target == "heart") & (table.source == "aorta")].iloc[0]
    assert heart_aorta.ci_low > 0                                    # the planted effect: F > M


def test_methods_page_shows_the_agreement_of_two_runs(monkeypatch, analysed_store):
    app = open_app(monkeypatch, analysed_store["path"], "methods", {"run": analysed_store["vg"]})
    assert app.subheader[0].value == "Agreement between methods"
    bars = pio.from_json(charts(app)[0].proto.spec)
    assert analytics.AVERAGE_TARGET_TITLE in list(bars.data[0].x) and len(bars.data[0].x) == 18
    assert app.selectbox(key="agree_with").value == analysed_store["smoothgrad"]


def test_knowledge_graph_minimum_mass_drops_light_edges(monkeypatch, analysed_store):
    ref = data.store_ref(analysed_store["path"])
    _, _, all_edges, _ = compute.graph_edges(ref, analysed_store["vg"], CohortFilter(), 3)
    _, _, heavy, _ = compute.graph_edges(ref, analysed_store["vg"], CohortFilter(), 3, min_mass=0.05)
    assert len(heavy) < len(all_edges) and (heavy["mass"] >= 0.05).all()
    app = open_app(monkeypatch, analysed_store["path"], "knowledge_graph", {"run": analysed_store["vg"],
                                                                           "min_mass": "0.05"})
    assert not app.exception and app.slider(key="min_mass").value == 0.05


def test_interval_sources_stored_live_and_normal(monkeypatch, analysed_store):
    ref = data.store_ref(analysed_store["path"])
    run = analysed_store["vg"]
    assert compute.stored_cohort_name(CohortFilter()) == "*"
    assert compute.stored_cohort_name(CohortFilter(datasets=("external",))) == "external"
    assert compute.stored_cohort_name(CohortFilter(datasets=("external",), sexes=("F",))) is None
    cohort = CohortFilter(sexes=("M",))
    view = compute.global_matrix_view(ref, run, cohort, "abs", "id")
    n = len(data.cohort_cases(ref, run, cohort))
    live = compute.matrix_intervals(ref, run, cohort, "abs", view, n)
    monkeypatch.setattr(compute, "LIVE_BOOTSTRAP_CASES", 0)
    normal = compute.matrix_intervals(ref, run, cohort, "abs", view, n + 1)   # another key: not cached
    assert "normal approximation" in normal.how and "bootstrap" in live.how
    finite = np.isfinite(live.low) & np.isfinite(normal.low)
    assert np.allclose(live.low[finite], normal.low[finite], atol=0.02)      # they agree on a mean's interval
    assert (live.low[finite] <= view.matrix[finite] + 1e-12).all()
    # the normal interval's width follows the level asked for: z = 1.2816 at 80 %, 1.9600 at 95 %
    narrow = compute.matrix_intervals(ref, run, cohort, "abs", view, n + 1, level=0.8)
    wide, slim = normal.high - normal.low, narrow.high - narrow.low
    shown = np.isfinite(wide) & (wide > 0)
    assert shown.any() and np.allclose(slim[shown] / wide[shown], 1.2815516 / 1.9599640, rtol=1e-6)
    assert narrow.how.startswith("80%")


def test_add_intervals_extends_the_hover_of_any_heat_map():
    from dashboard.analytics import Roi

    rois = [Roi(0, "a", "organ", "#777", True), Roi(1, "b", "bone", "#00f", True)]
    view = MatrixView(rois, rois, np.array([[0.5, 0.5], [0.2, 0.8]]), np.array([[3, 3], [3, 3]]))
    figure = figures.matrix_heatmap(view, "t", "p")
    figures.add_intervals(figure, np.array([[0.4, 0.45], [0.1, 0.7]]), np.array([[0.6, 0.55], [0.3, 0.9]]))
    heat = figure.data[0]
    assert heat.customdata[1][0][-1] == "[0.1000, 0.3000]" and "95 % CI: %{customdata[3]}" in heat.hovertemplate
    json.loads(figure.to_json())


def test_case_viewer_shows_the_sampling_noise_of_a_smoothgrad_case(monkeypatch, synthetic_store, tmp_path):
    """Rows as precompute writes them (SE per cell) show in the local matrix's hover and in a table with CSV."""
    import duckdb

    path = tmp_path / "store.duckdb"
    shutil.copyfile(synthetic_store["path"], path)
    shutil.copytree(synthetic_store["artifact_root"], tmp_path / "artifacts")
    run_id = synthetic_store["run_ids"]["smoothgrad"]
    with duckdb.connect(str(path)) as con:
        case = con.execute("SELECT min(case_id) FROM local_importance WHERE run_id = ?", [run_id]).fetchone()[0]
        con.execute("""INSERT INTO sampling_noise SELECT run_id, case_id, target_id, source_id, 'abs',
                       0.01 + 0.001 * source_id, greatest(mass_abs - 0.02, 0), least(mass_abs + 0.02, 1), 4
                       FROM local_importance WHERE run_id = ? AND case_id = ? AND mass_abs IS NOT NULL""",
                    [run_id, case])
        heart = synthetic_store["roi_ids"]["heart"]
        expected_se = 0.01 + 0.001 * heart
    app = open_app(monkeypatch, path, "case_viewer", {"run": run_id, "case": case})
    assert not app.error
    local = next(t for c in charts(app) for t in pio.from_json(c.proto.spec).data
                 if t.type == "heatmap" and "sampling noise" in t.hovertemplate)
    cells = [row[-1] for grid in [local.customdata] for line in grid for row in line]
    assert f"± {expected_se:.4f} (4 noise samples)" in cells
    assert any("its 4 noise samples (delete-one jackknife)" in c for c in texts(app, "caption"))
    table = next(d.value for d in app.dataframe if "se" in d.value.columns)
    assert (table.n_samples == 4).all() and table.se.max() == pytest.approx(table.se.iloc[0])
    assert (table.low <= table.mass + 1e-12).all() and (table.mass <= table.high + 1e-12).all()
    assert "CSV" in downloads(app)
    app = open_app(monkeypatch, path, "case_viewer", {"run": synthetic_store["run_ids"]["vg"], "case": case})
    assert not any("sampling noise" in t.hovertemplate for c in charts(app) for t in pio.from_json(c.proto.spec).data
                   if t.type == "heatmap")
