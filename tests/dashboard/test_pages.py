"""The Streamlit app under AppTest: every page on the synthetic and the TSV2 store, filters, URL state,
bad URLs, empty states and exports."""
from __future__ import annotations

import json
import os
from pathlib import Path

import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.widgets import export

from apptest import ROOT, TIMEOUT, case_count_caption, charts, open_app, texts  # noqa: F401
from synthetic_store import read_sql

PAGES = ["overview", "heat_map", "knowledge_graph", "class_distributions", "context_mass", "outliers",
         "case_viewer", "methods"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_synthetic_store(monkeypatch, synthetic_store, page):
    app = open_app(monkeypatch, synthetic_store["path"], page)
    assert app.title and "60** of 60 cases" in case_count_caption(app)
    assert charts(app), f"{page} shows no figure"
    labels = [b.proto.label for b in app.get("download_button")]
    assert {"PNG", "SVG", "PDF"} <= set(labels)
    assert not app.error


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_tsv2_store(monkeypatch, tsv2_store, page):
    app = open_app(monkeypatch, tsv2_store["path"], page)
    assert "32** of 32 cases" in case_count_caption(app)
    infos = " ".join(texts(app, "info") + texts(app, "caption"))
    expected = {
        "overview": "no sex and no age recorded",
        "heat_map": "not stored for this run",
        "case_viewer": "no slice artefacts",
        "outliers": "python -m agg2exp_core analyze --help",
        "methods": "python -m agg2exp_core evaluate --help",
        "knowledge_graph": "",
        "class_distributions": "not stored for this run",
        "context_mass": "",
    }[page]
    assert expected in infos
    if page not in ("outliers", "methods"):
        assert charts(app)
    assert not app.error


def test_sidebar_says_what_metadata_is_missing(monkeypatch, tsv2_store):
    app = open_app(monkeypatch, tsv2_store["path"])
    sidebar = " ".join(c.value for c in app.sidebar.caption)
    assert "Sex is not recorded" in sidebar and "Age is not recorded" in sidebar
    assert "No pathology annotations" in sidebar


def test_filter_lives_in_the_url_and_round_trips(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "heat_map")
    app.multiselect(key="w_dataset").set_value(["external"])
    app.multiselect(key="w_sex").set_value(["F"])
    app.slider(key="w_age").set_value((40, 80))
    app.radio(key="order").set_value("cluster").run()
    assert not app.exception
    caption = case_count_caption(app)
    params = dict(app.query_params)
    assert params["dataset"] == "external" and params["sex"] == "F"
    assert params["age_min"] == "40" and params["age_max"] == "80" and params["order"] == "cluster"
    assert "dataset: `external` · sex: `F` · age 40–80" in caption

    again = open_app(monkeypatch, synthetic_store["path"], "heat_map", params)
    assert again.multiselect(key="w_dataset").value == ["external"]
    assert again.multiselect(key="w_sex").value == ["F"]
    assert again.slider(key="w_age").value == (40, 80)
    assert again.radio(key="order").value == "cluster"
    assert case_count_caption(again) == caption
    assert not again.warning


def test_pathology_filter_and_run_choice(monkeypatch, synthetic_store):
    vg = synthetic_store["run_ids"]["vg"]
    app = open_app(monkeypatch, synthetic_store["path"], "class_distributions",
                   {"run": vg, "pathology": "pleural_effusion", "target": "heart", "kind": "pos"})
    assert app.selectbox(key="w_run").value == vg
    assert app.selectbox(key="w_pathology").value == "pleural_effusion"
    assert app.selectbox(key="target").value == "heart" and app.radio(key="kind").value == "pos"
    assert "with `pleural_effusion`" in case_count_caption(app)
    assert app.query_params["run"] == vg


def test_bad_query_params_are_ignored_with_a_warning(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "heat_map",
                   {"run": "no-such-run", "dataset": "mars", "age_min": "old", "age_max": "1e9",
                    "pathology": "'; DROP TABLE cases; --", "order": "bogus", "kind": "x"})
    warnings = " ".join(texts(app, "warning"))
    for fragment in ("run='no-such-run'", "dataset='mars'", "age_min='old'", "age_max='1e9'", "pathology=",
                     "order='bogus'", "kind='x'"):
        assert fragment in warnings
    assert "60** of 60 cases" in case_count_caption(app)
    assert charts(app)
    assert not {"run", "dataset", "age_min", "age_max", "pathology", "order", "kind"} & set(app.query_params)


def test_empty_filter_gives_a_clear_message(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "knowledge_graph")
    app.multiselect(key="w_dataset").set_value([]).run()
    assert not app.exception and not charts(app)
    assert any("No case matches the cohort filter" in t for t in texts(app, "info"))
    assert app.query_params["dataset"] == ""
    app.button[0].click().run()          # "Reset filter"
    assert "60** of 60 cases" in case_count_caption(app) and charts(app)


def test_missing_store_says_to_run_make_demo(monkeypatch, tmp_path):
    app = open_app(monkeypatch, tmp_path / "nowhere.duckdb")
    message = " ".join(texts(app, "error"))
    assert "No store found" in message and "make demo" in message
    broken = tmp_path / "broken.duckdb"
    broken.write_text("not a database")
    app = open_app(monkeypatch, broken)
    assert "cannot be read" in " ".join(texts(app, "error"))


def test_cohort_comparison_finds_the_planted_sex_effect(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "heat_map",
                   {"view": "compare", "by": "sex", "a": "F", "b": "M"})
    caption = next(c for c in texts(app, "caption") if c.startswith("A = "))
    assert "A = sex = F" in caption and "significant cell" in caption
    figure = json.loads(charts(app)[0].proto.spec)
    marked = figure["data"][1]
    heart_row = figure["layout"]["yaxis"]["ticktext"].index("<span style='color:#d62728'>heart</span>")
    aorta_col = figure["layout"]["xaxis"]["ticktext"].index("<span style='color:#d62728'>aorta</span>")
    assert (aorta_col, heart_row) in set(zip(marked["x"], marked["y"]))
    app.selectbox(key="by").set_value("age").run()
    assert not app.exception and charts(app)
    app.selectbox(key="by").set_value("pathology").run()
    assert not app.exception and charts(app)


def test_outliers_open_the_case_viewer(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "outliers", {"target": "heart"})
    top = app.selectbox(key="outlier_case").value
    next(b for b in app.button if b.label == "Open in case viewer").click().run()
    assert not app.exception
    assert app.title[0].value == "Case viewer"
    assert app.selectbox(key="case").value == top and app.selectbox(key="target").value == "heart"
    assert app.query_params["case"] == top


def test_case_viewer_windows_overlays_and_3d(monkeypatch, synthetic_store):
    case = synthetic_store["case_ids"][-1]
    app = open_app(monkeypatch, synthetic_store["path"], "case_viewer",
                   {"case": case, "target": "heart", "window": "custom", "ww": "400", "wl": "40",
                    "slice_axial": "3"})
    assert not app.exception and len(charts(app)) == 5
    assert any("block-averaged volume (exact plane at slice" in c for c in texts(app, "caption"))
    assert app.slider(key="slice_axial").value == 3
    app.radio(key="window").set_value("bone")
    app.toggle(key="3d").set_value(True).run()
    assert not app.exception
    assert len(charts(app)) == 6 or any("No 3-D view" in t for t in texts(app, "info"))


def test_exported_page_figures_are_real_png_svg_pdf(monkeypatch, synthetic_store):
    if export.chromium_path() is None:
        pytest.skip("Chromium is not installed; static export is unavailable")
    app = open_app(monkeypatch, synthetic_store["path"], "heat_map")
    figure = pio.from_json(charts(app)[0].proto.spec)
    png = export.figure_to_bytes(figure, "png")
    svg = export.figure_to_bytes(figure, "svg")
    pdf = export.figure_to_bytes(figure, "pdf")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert b"<svg" in svg[:200] and b"heart" in svg
    assert pdf.startswith(b"%PDF")
    names = [b.proto for b in app.get("download_button")]
    assert any(n.label == "CSV" for n in names)


def test_republished_store_is_reopened(tmp_path):
    """The writer publishes by atomic rename; the reader's cached connection must follow."""
    from synthetic_store import build_synthetic_store
    from dashboard import data

    first = build_synthetic_store(tmp_path / "a" / "store.duckdb", n_cases=6, with_artifacts=False, eval_methods=())
    second = build_synthetic_store(tmp_path / "b" / "store.duckdb", n_cases=6, with_artifacts=False,
                                   run_methods=("ig",), eval_methods=())
    path = first["path"]
    ref = data.store_ref(path)
    assert data.runs(ref).method.tolist() == ["vg"]
    os.replace(second["path"], path)
    new_ref = data.store_ref(path)
    assert new_ref != ref
    assert data.runs(new_ref).method.tolist() == ["ig"]


def test_several_stores_are_offered_by_name(monkeypatch, synthetic_store, tsv2_store):
    both = os.pathsep.join([str(synthetic_store["path"]), str(tsv2_store["path"])])
    app = open_app(monkeypatch, both, "heat_map", {"store": "tsv2"})
    assert app.selectbox(key="store").value == "tsv2"
    assert "32** of 32 cases" in case_count_caption(app)
    app = open_app(monkeypatch, both, "overview", {"store": "../../etc/passwd"})
    assert any("store='../../etc/passwd'" in w for w in texts(app, "warning"))
    assert "60** of 60 cases" in case_count_caption(app)


# ------------------------------------------------------------------ Methods page: evaluation runs, vocabulary
METHOD_TITLES = {"Vanilla Gradient", "SmoothGrad", "Integrated Gradients", "KernelSHAP (semantic)"}


def methods_table(app: AppTest):
    return next(d.value for d in app.dataframe if "n (case × class)" in d.value.columns)


def test_methods_page_shows_evaluation_runs_that_have_no_case_status(monkeypatch, synthetic_store):
    """As in the demo store, evaluation runs (runs.source = 'evaluate') hold method_eval and
    perturbation_curve rows only; the page filters their cases through the cases table."""
    from dashboard import data

    ref = data.store_ref(synthetic_store["path"])
    shape = read_sql(ref, """
        SELECT count(*) AS runs, (SELECT count(*) FROM case_status WHERE run_id IN
                                  (SELECT run_id FROM runs WHERE source = 'evaluate')) AS status
        FROM runs WHERE source = 'evaluate'""").iloc[0]
    assert shape.runs == len(METHOD_TITLES) and shape.status == 0      # shaped like the demo store
    app = open_app(monkeypatch, synthetic_store["path"], "methods")
    assert not any("No evaluated case" in t for t in texts(app, "info"))
    table = methods_table(app).set_index("method")
    assert set(table.index) == METHOD_TITLES and (table["cases"] == 8).all()
    assert (table["n (case × class)"] == 8 * 7).all()
    faithfulness = table["Faithfulness ↑"].map(lambda cell: float(cell.split("(mean ")[1].split(" ± ")[0]))
    assert table["Faithfulness ↑"].str.match(r"^-?[\d.]+ \(mean ").all()              # the median leads
    assert faithfulness["Vanilla Gradient"] > faithfulness["KernelSHAP (semantic)"]      # the synthetic profile
    figure = json.loads(charts(app)[0].proto.spec)
    assert {t.get("name") for t in figure["data"]} >= METHOD_TITLES
    assert {t["xaxis"] for t in figure["data"]} == {"x", "x2"}                            # MoRF and LeRF panels

    # The filter applies to the evaluated cases' metadata: they are reference test cases.
    app.multiselect(key="w_dataset").set_value(["external"]).run()
    assert any("None of the 8 evaluated case(s) passes the cohort filter" in t for t in texts(app, "info"))
    app.multiselect(key="w_dataset").set_value(["reference"])
    app.multiselect(key="w_sex").set_value(["F"]).run()
    evaluated = read_sql(ref, "SELECT DISTINCT e.case_id FROM method_eval e JOIN cases c USING (case_id) "
                                "WHERE c.sex = 'F'")
    assert (methods_table(app)["cases"] == len(evaluated)).all() and 0 < len(evaluated) < 8


@pytest.fixture(scope="module")
def core_evaluated_store(tmp_path_factory) -> dict:
    """A store whose evaluation rows the core wrote: names from ``evaluate_case`` on a tiny linear
    model (with the bootstrap interval), rows from ``store.write_method_eval``, runs as ``evaluate`` makes them."""
    import torch

    from agg2exp_core import store
    from agg2exp_core.analysis import evaluation
    from agg2exp_core.attribution.partitions import cube_partition
    from synthetic_store import MODEL_SHA, build_synthetic_store

    class LinearSeg(torch.nn.Module):      # class 1 logit = w * x everywhere, class 0 never predicted
        def __init__(self, w):
            super().__init__()
            self.register_buffer("w", w)

        def forward(self, x):
            return torch.cat([torch.full_like(x, -100.0), self.w * x], dim=1)

    info = build_synthetic_store(tmp_path_factory.mktemp("core-eval") / "store.duckdb", n_cases=6,
                                 with_artifacts=False, eval_methods=())
    generator = torch.Generator().manual_seed(0)
    shape = (8, 6, 4)
    model = LinearSeg(torch.rand(shape, generator=generator) * 2 - 0.5)
    methods = {"vg": {}, "smoothgrad": {"n_samples": 2}}
    run_ids = {name: store.run_id_for(f"eval-{name}", params, MODEL_SHA, "evaluate")
               for name, params in methods.items()}
    with store.open_writer(info["path"]) as con:
        for name, run_id in run_ids.items():
            store.ensure_run(con, run_id, name, methods[name], MODEL_SHA, info["class_names"], source="evaluate",
                             description="attribution-method evaluation")
        for case_id in info["case_ids"][:2]:
            image = torch.rand(1, *shape, generator=generator)
            config = evaluation.EvaluationConfig(
                faithfulness=evaluation.FaithfulnessConfig(n_subsets=20, n_bootstrap=20),
                sensitivity=evaluation.SensitivityConfig(n=2),
                curves=evaluation.CurveConfig(partition=cube_partition(shape, (2, 2, 1))))
            scores, curves = evaluation.evaluate_case(model, image, methods, [1], config)
            store.write_method_eval(con, run_ids, case_id, scores, curves, {1: info["roi_ids"]["aorta"]})
    return info


def test_methods_table_titles_every_metric_the_core_writes(monkeypatch, core_evaluated_store):
    from agg2exp_core import vocabulary
    from agg2exp_core.analysis.evaluation import curve_metrics
    from dashboard import data

    ref = data.store_ref(core_evaluated_store["path"])
    written = set(read_sql(ref, "SELECT DISTINCT metric FROM method_eval").metric)
    assert set(curve_metrics([1.0, 0.6, 0.2, 0.0], [1.0, 0.9, 0.7, 0.0])) <= written
    assert {"faithfulness", "faithfulness_ci_low", "sensitivity_max", "complexity", "efficiency_s"} <= written
    assert written <= set(vocabulary.METRICS), f"the vocabulary lacks {written - set(vocabulary.METRICS)}"
    app = open_app(monkeypatch, core_evaluated_store["path"], "methods")
    table = methods_table(app)
    for name in written:
        title = vocabulary.METRICS[name].label
        assert title in table.columns, f"{name}: no column {title!r} in {list(table.columns)}"
    assert set(table.method) == {"Vanilla Gradient", "SmoothGrad"}
    assert all(" ± " in cell for cell in table[vocabulary.METRICS["naopc"].label])
