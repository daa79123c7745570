"""The cohort filter on metadata fields: sidebar picker, URL round-trip, unknown names ignored with a
notice, captions, the pages showing only the filtered cases, and the case CSVs carrying the fields."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from agg2exp_core import store
from dashboard import data, filters
from dashboard.filters import CohortFilter, FieldCondition
from dashboard.views import outliers
from dashboard.views.common import open_context
from dashboard.widgets import export

from apptest import case_count_caption, open_app, texts
from synthetic_store import build_synthetic_store

N_CASES = 30


def planted_fields(case_ids: list[str]) -> pd.DataFrame:
    """scanner A/B/C by position; slice thickness 1/2.5/5 in pairs, missing for every 7th case."""
    rows = []
    for i, case_id in enumerate(case_ids):
        rows.append((case_id, "scanner", "categorical", "ABC"[i % 3], None, "manifest"))
        if i % 7:
            thick = (1.0, 2.5, 5.0)[(i // 2) % 3]
            rows.append((case_id, "slice_thickness_mm", "numeric", f"{thick:g}", thick, "dicom"))
    return pd.DataFrame(rows, columns=["case_id", "name", "kind", "value", "number", "source"])


@pytest.fixture(scope="module")
def field_store(tmp_path_factory):
    built = build_synthetic_store(tmp_path_factory.mktemp("fields") / "store.duckdb", n_cases=N_CASES, seed=3)
    fields = planted_fields(built["case_ids"])
    with store.open_writer(built["path"]) as con:
        store.write_case_fields(con, fields, built["case_ids"])
    wide = fields.pivot(index="case_id", columns="name", values="number").assign(
        scanner=fields[fields.name == "scanner"].set_index("case_id").value)
    return {**built, "wide": wide}


def expected_ids(field_store, scanners=None, low=None, high=None) -> list[str]:
    wide = field_store["wide"]
    keep = pd.Series(True, index=wide.index)
    if scanners is not None:
        keep &= wide.scanner.isin(scanners)
    if low is not None or high is not None:
        thick = wide.slice_thickness_mm
        keep &= thick.notna() & (thick >= (low if low is not None else -1e9)) & (thick <= (high if high is not None
                                                                                          else 1e9))
    return sorted(wide.index[keep])


def test_url_fields_filter_the_pages_and_round_trip(monkeypatch, field_store):
    params = {"field.scanner": ["B", "C"], "field.slice_thickness_mm": "2..4"}
    app = open_app(monkeypatch, field_store["path"], "outliers", params)
    want = expected_ids(field_store, ["B", "C"], 2.0, 4.0)
    assert 0 < len(want) < N_CASES
    caption = case_count_caption(app)
    assert f"**{len(want)}** of {N_CASES} cases" in caption
    assert "`scanner`: `B`, `C`" in caption and "`slice_thickness_mm` 2–4" in caption
    assert app.multiselect(key="w_fields").value == ["scanner", "slice_thickness_mm"]
    assert app.multiselect(key="w_field_scanner").value == ["B", "C"]
    ranking = app.dataframe[0].value
    assert sorted(ranking.case_id) == want                       # the page lists only the filtered cases
    assert set(ranking.scanner) <= {"B", "C"} and ranking.slice_thickness_mm.eq(2.5).all()
    assert app.query_params["field.scanner"] == ["B", "C"]
    assert app.query_params["field.slice_thickness_mm"] == "2..4"
    assert not app.warning

    again = open_app(monkeypatch, field_store["path"], "outliers", dict(app.query_params))
    assert case_count_caption(again) == caption and not again.warning


def test_picking_a_field_then_values_in_the_sidebar(monkeypatch, field_store):
    app = open_app(monkeypatch, field_store["path"], "heat_map")
    app.multiselect(key="w_fields").set_value(["scanner"]).run()
    assert "30** of 30 cases" in case_count_caption(app)          # all values picked: no restriction yet
    app.multiselect(key="w_field_scanner").set_value(["A"]).run()
    assert not app.exception
    want = expected_ids(field_store, ["A"])
    assert f"**{len(want)}** of {N_CASES} cases" in case_count_caption(app)
    assert app.query_params["field.scanner"] == "A"
    app.button[0].click().run()                                   # "Reset filter"
    assert "30** of 30 cases" in case_count_caption(app) and "field.scanner" not in app.query_params


def test_unknown_fields_and_values_in_the_url_are_ignored_with_a_notice(monkeypatch, field_store):
    app = open_app(monkeypatch, field_store["path"], "heat_map",
                   {"field.no_such": "x", "field.scanner": "'; DROP TABLE cases; --",
                    "field.slice_thickness_mm": "thin..thick", "field.": "x"})
    warnings = " ".join(texts(app, "warning"))
    assert "field.no_such='x'" in warnings and "no such metadata field" in warnings
    assert "no such value of scanner" in warnings and "not a range 'low..high'" in warnings
    assert "30** of 30 cases" in case_count_caption(app)
    assert not any(k.startswith("field.") and k != "field." for k in app.query_params)


def test_parse_and_url_form_are_inverse():
    options = filters.FilterOptions(fields=(
        filters.FieldOption("scanner", "categorical", values=("A", "B", "C")),
        filters.FieldOption("thick", "numeric", bounds=(1.0, 5.0), n_missing=2)))
    cohort = CohortFilter(fields=(FieldCondition("scanner", values=("A",)), FieldCondition("thick", low=2.0)))
    params = filters.filter_to_params(cohort)
    assert params == {"field.scanner": ["A"], "field.thick": ["2.."]}
    parsed, warnings = filters.parse_filter_params(params, options)
    assert parsed == cohort and not warnings
    everything = CohortFilter(fields=(FieldCondition("scanner", values=("A", "B", "C")),))
    assert filters.normalise(everything, options).fields == ()    # all values and none missing: no restriction
    assert filters.describe_filter(cohort) == "scanner: A · thick ≥ 2"
    assert filters.filter_slug(cohort) == "scanner-A_thick2-"


def test_in_memory_filter_agrees_with_the_sql(field_store):
    ref = data.store_ref(field_store["path"])
    run_id = field_store["run_ids"]["vg"]
    wide = data.run_fields(ref, run_id)
    for cohort in (CohortFilter(fields=(FieldCondition("scanner", values=("B",)),)),
                   CohortFilter(fields=(FieldCondition("slice_thickness_mm", low=2.0, high=2.5),)),
                   CohortFilter(sexes=("F",), fields=(FieldCondition("slice_thickness_mm", high=1.0),))):
        sql_ids = sorted(data.cohort_cases(ref, run_id, cohort).case_id)
        cases = data.cohort_cases(ref, run_id, CohortFilter()).merge(wide, on="case_id")
        assert sql_ids == sorted(filters.apply_filter(cases, cohort).case_id) and sql_ids


def test_the_outlier_csv_carries_the_fields(field_store):
    ref = data.store_ref(field_store["path"])
    ctx = open_context(ref, field_store["run_ids"]["vg"],
                       CohortFilter(fields=(FieldCondition("scanner", values=("A", "C")),)))
    shown = outliers.ranking(ctx, outliers.targets(ctx)[0])
    table = pd.read_csv(io.BytesIO(export.table_csv(shown.ranking)))
    assert {"scanner", "slice_thickness_mm"} <= set(table.columns)
    assert set(table.scanner) == {"A", "C"} and sorted(table.case_id) == expected_ids(field_store, ["A", "C"])
    wide = field_store["wide"]
    assert table.set_index("case_id").slice_thickness_mm.equals(wide.slice_thickness_mm.reindex(
        table.case_id).rename_axis("case_id"))


def test_fields_a_hostile_store_holds_are_not_offered():
    """Names become widget labels and URL keys: only names the core's writer accepts are offered;
    an infinite number gives no slider; an unknown source is shown as 'other'."""
    catalog = pd.DataFrame({"name": ["ok", "[x](http://evil)", "inf"],
                            "kind": ["categorical", "categorical", "numeric"], "source": ["<b>", "manifest", "dicom"]})
    wide = pd.DataFrame({"case_id": ["a", "b"], "ok": ["A", None], "[x](http://evil)": ["1", "2"],
                         "inf": [float("inf"), None]})
    offered = filters.field_filters.field_options(wide, catalog)
    assert offered == (filters.FieldOption("ok", "categorical", "other", values=("A",), n_missing=1),)
