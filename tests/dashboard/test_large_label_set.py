"""A TotalSegmentator-sized label set (117 classes): every page renders, the heat map opens by
anatomical group and zooms to one group, and class pickers list classes by group."""
from __future__ import annotations

import json

import pytest

from apptest import case_count_caption, charts, open_app
from dashboard.label_groups import LARGE_LABEL_SET
from label_sets import TOTALSEG_LIKE

PAGES = ["overview", "heat_map", "knowledge_graph", "class_distributions", "context_mass", "drift", "outliers",
         "failure_modes", "case_viewer", "methods", "report"]
N_CASES = 40


@pytest.fixture(scope="module")
def large_store(tmp_path_factory) -> dict:
    from synthetic_store import build_synthetic_store

    return build_synthetic_store(tmp_path_factory.mktemp("large") / "store.duckdb", n_cases=N_CASES, seed=1,
                                 with_artifacts=3, class_names=TOTALSEG_LIKE, eval_methods=("vg",))


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_the_builder_writes_the_label_set(large_store):
    assert large_store["class_names"] == list(TOTALSEG_LIKE) and len(TOTALSEG_LIKE) == 117 > LARGE_LABEL_SET
    with pytest.raises(ValueError, match="background"):
        from synthetic_store import build_synthetic_store

        build_synthetic_store(large_store["path"].parent / "bad.duckdb", class_names=["liver", "background"])


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_117_classes(monkeypatch, large_store, page):
    app = open_app(monkeypatch, large_store["path"], page)
    assert f"{N_CASES}** of {N_CASES} cases" in case_count_caption(app)
    assert not app.error, [e.value for e in app.error]
    if page not in ("methods", "report", "drift", "failure_modes"):   # (as on the 17-class store: no figure there)
        assert charts(app), f"{page} shows no figure"


def heat_map_axes(app) -> tuple[list, list]:
    """(row names, column names) of the page's heat map, from its hover data (target, source, n)."""
    spec = json.loads(charts(app)[-1].proto.spec)
    custom = next(t for t in spec["data"] if t["type"] == "heatmap")["customdata"]
    return [row[0][0] for row in custom], [cell[1] for cell in custom[0]]


def test_the_heat_map_opens_by_group_and_zooms_to_one(monkeypatch, large_store):
    app = open_app(monkeypatch, large_store["path"], "heat_map")
    rows, columns = heat_map_axes(app)
    assert len(rows) == 5 and len(columns) == 6, (rows, columns)      # + pathology among the sources
    assert any(label.startswith("bone (") for label in rows)
    zoom = app.selectbox(key="zoom")
    assert zoom.options[:2] == ["every class", "anatomical groups (sources summed, targets averaged)"]
    zoom.set_value("group:muscle").run()
    rows, columns = heat_map_axes(app)
    assert len(rows) == 10 and "gluteus_maximus_left" in rows and "bone (62)" in columns
    assert app.query_params["zoom"] in ("group:muscle", ["group:muscle"]), "the zoom lives in the URL"
    zoom.set_value("all").run()
    rows, columns = heat_map_axes(app)
    assert len(rows) == 117 and not app.error


def test_class_pickers_list_classes_by_group(monkeypatch, large_store):
    app = open_app(monkeypatch, large_store["path"], "class_distributions")
    picker = app.selectbox(key="target")
    assert len(picker.options) == 117
    groups = [option.split(" · ")[0] for option in picker.options]
    assert groups == sorted(groups, key=["cardiovascular", "organ", "bone", "muscle", "other"].index)
    picker.set_value("vertebrae_L1").run()
    assert app.query_params["target"] in ("vertebrae_L1", ["vertebrae_L1"]) and not app.error
