"""Pure helpers of the dashboard: filter validation and SQL, slices, matrices, graph, export names."""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agg2exp_core.store.queries import where_clause
from dashboard import analytics, config, filters
from dashboard.widgets import export
from dashboard.imaging import artefact, slices

CASES = pd.DataFrame({
    "case_id": ["a", "b", "c", "d", "e"],
    "dataset": ["reference", "reference", "external", "external", "external"],
    "split": ["train", "test", "test", "test", None],
    "sex": ["F", "M", "F", None, "M"],
    "age": [30.0, 55.0, 71.0, np.nan, 49.0],
    "pathologies": ["", "", "pleural_effusion", "consolidation;pleural_effusion", ""],
})


def test_options_list_values_unknowns_and_pathologies():
    options = filters.options_from_cases(CASES)
    assert options.datasets == ("external", "reference")
    assert options.sexes == ("F", "M", filters.UNKNOWN)
    assert options.splits == ("test", "train", filters.UNKNOWN)
    assert options.age_range == (30, 71)
    assert options.pathologies == ("consolidation", "pleural_effusion")
    assert options.n_unknown_age == 1


def test_parse_keeps_valid_values_and_warns_about_the_rest():
    options = filters.options_from_cases(CASES)
    cohort, warnings = filters.parse_filter_params(
        {"dataset": ["external", "mars"], "sex": ["F"], "age_min": ["40"], "age_max": ["abc"],
         "pathology": ["pleural_effusion"]}, options)
    assert cohort.datasets == ("external",) and cohort.sexes == ("F",)
    assert cohort.age_min == 40 and cohort.age_max is None and cohort.pathology == "pleural_effusion"
    assert len(warnings) == 2 and "mars" in warnings[0] and "age_max" in warnings[1]
    cohort, warnings = filters.parse_filter_params({"age_min": ["60"], "age_max": ["20"], "pathology": ["x"]},
                                                   options)
    assert cohort == filters.CohortFilter() and len(warnings) == 2


def test_url_round_trip_and_normalisation():
    options = filters.options_from_cases(CASES)
    cohort = filters.CohortFilter(datasets=("external",), sexes=("F", "M"), age_min=35.0, pathology="any")
    params = filters.filter_to_params(filters.normalise(cohort, options))
    again, warnings = filters.parse_filter_params(params, options)
    assert not warnings and again == filters.normalise(cohort, options)
    everything = filters.CohortFilter(datasets=options.datasets, age_min=0.0, age_max=200.0)
    assert filters.normalise(everything, options) == filters.CohortFilter()
    empty = filters.CohortFilter(datasets=())
    assert filters.filter_to_params(empty) == {"dataset": [""]}
    assert filters.parse_filter_params({"dataset": [""]}, options)[0].datasets == ()


@pytest.mark.parametrize("cohort", [
    filters.CohortFilter(),
    filters.CohortFilter(datasets=("external",)),
    filters.CohortFilter(sexes=("F", filters.UNKNOWN)),
    filters.CohortFilter(splits=(filters.UNKNOWN,)),
    filters.CohortFilter(age_min=40.0, age_max=60.0),
    filters.CohortFilter(pathology="pleural_effusion"),
    filters.CohortFilter(pathology="consolidation"),
    filters.CohortFilter(pathology=filters.PATHOLOGY_ANY),
    filters.CohortFilter(pathology=filters.PATHOLOGY_NONE),
    filters.CohortFilter(datasets=()),
])
def test_sql_where_clause_selects_what_the_pandas_filter_selects(cohort):
    con = duckdb.connect()
    con.register("cases", CASES)
    condition, params = where_clause(cohort, "c")
    sql_ids = sorted(con.execute(f"SELECT case_id FROM cases c WHERE {condition}", params).df().case_id)
    assert sql_ids == sorted(filters.apply_filter(CASES, cohort).case_id)


# Names with spaces, blanks around names, and splits that are '' or blank rather than NULL.
SPACED = pd.DataFrame({
    "case_id": ["a", "b", "c", "d", "e"],
    "dataset": ["reference"] * 5,
    "split": ["train", "", None, "test", "  "],
    "sex": ["F", "M", "F", "M", "F"],
    "age": [30.0, 55.0, 71.0, 40.0, 49.0],
    "pathologies": ["pleural effusion", " lung nodule ; pleural effusion", "", None, " ; "],
})


_CON = duckdb.connect()


def selected_ids(cases: pd.DataFrame, cohort: filters.CohortFilter) -> tuple[list[str], list[str]]:
    """(case ids the SQL condition selects, case ids the pandas filter selects)."""
    con = _CON
    con.register("cases", cases)
    condition, params = where_clause(cohort, "c")
    sql_ids = sorted(con.execute(f"SELECT case_id FROM cases c WHERE {condition}", params).df().case_id)
    return sql_ids, sorted(filters.apply_filter(cases, cohort).case_id)


def test_pathology_names_with_spaces_match():
    options = filters.options_from_cases(SPACED)
    assert options.pathologies == ("lung nodule", "pleural effusion")
    for name, expected in (("pleural effusion", ["a", "b"]), ("lung nodule", ["b"])):
        cohort, warnings = filters.parse_filter_params({"pathology": [name]}, options)
        assert not warnings and cohort.pathology == name
        assert selected_ids(SPACED, cohort) == (expected, expected), name
    assert selected_ids(SPACED, filters.CohortFilter(pathology=filters.PATHOLOGY_ANY)) == (["a", "b"],) * 2
    assert selected_ids(SPACED, filters.CohortFilter(pathology=filters.PATHOLOGY_NONE)) == (["c", "d", "e"],) * 2
    assert selected_ids(SPACED, filters.CohortFilter(pathology="pleuraleffusion")) == ([], [])


def test_every_single_split_value_survives_a_url_reload():
    options = filters.options_from_cases(SPACED)
    for value in options.splits:
        cohort = filters.normalise(filters.CohortFilter(splits=(value,)), options)
        params = filters.filter_to_params(cohort)
        again, warnings = filters.parse_filter_params(params, options)
        assert not warnings and again == cohort and again.splits == (value,), (value, params)
        sql_ids, pandas_ids = selected_ids(SPACED, again)
        assert sql_ids == pandas_ids and sql_ids, value
    assert options.splits == ("test", "train", filters.UNKNOWN), "'' and blanks are 'not recorded', like NULL"
    assert selected_ids(SPACED, filters.CohortFilter(splits=(filters.UNKNOWN,))) == (["b", "c", "e"],) * 2
    nothing, _ = filters.parse_filter_params({"split": [""]}, options)
    assert nothing.splits == () and selected_ids(SPACED, nothing) == ([], [])


@settings(max_examples=40, deadline=None)
@given(lists=st.lists(st.one_of(st.none(), st.text(alphabet="ab ;\t", max_size=8)), min_size=1, max_size=6),
       splits=st.lists(st.sampled_from([None, "", " ", "\t", "x", "y z"]), min_size=6, max_size=6),
       pick=st.integers(0, 10))
def test_sql_and_pandas_filters_agree_on_messy_metadata(lists, splits, pick):
    n = len(lists)
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "dataset": ["d"] * n, "split": splits[:n],
                          "sex": ["F"] * n, "age": [50.0] * n, "pathologies": lists})
    options = filters.options_from_cases(cases)
    choices = list(options.pathology_choices)
    cohorts = [filters.CohortFilter(pathology=choices[pick % len(choices)])]
    cohorts += [filters.CohortFilter(splits=(value,)) for value in options.splits]
    for cohort in cohorts:
        sql_ids, pandas_ids = selected_ids(cases, cohort)
        assert sql_ids == pandas_ids, cohort
    for name in options.pathologies:   # every offered name selects the cases whose list holds it
        expected = sorted(c for c, v in zip(cases.case_id, lists) if v and name in [p.strip() for p in v.split(";")])
        assert selected_ids(cases, filters.CohortFilter(pathology=name)) == (expected, expected)


def test_hostile_values_stay_parameters():
    cohort = filters.CohortFilter(datasets=("x'); DROP TABLE cases; --",), pathology="'; DROP TABLE cases; --")
    condition, params = where_clause(cohort)
    assert "DROP" not in condition and len(params) == 2
    con = duckdb.connect()
    con.register("cases", CASES)
    assert con.execute(f"SELECT count(*) FROM cases c WHERE {condition}", params).fetchone()[0] == 0
    with pytest.raises(ValueError):
        where_clause(cohort, "c; DROP")


def test_describe_and_slug():
    cohort = filters.CohortFilter(datasets=("external",), sexes=("F",), age_min=40.0, age_max=60.0)
    assert filters.describe_filter(cohort) == "dataset: external · sex: F · age 40–60"
    assert filters.filter_slug(cohort) == "dataset-external_sex-F_age40-60"
    assert filters.describe_filter(filters.CohortFilter()) == "all cases"


def test_store_paths_precedence():
    assert config.store_paths(["--db", "a.duckdb", "-q"], {"AGG2EXP_DB": "b.duckdb"}) == [config.Path("a.duckdb")]
    assert config.store_paths(["-q"], {"AGG2EXP_DB": "b.duckdb"}) == [config.Path("b.duckdb")]
    assert config.store_paths([], {}) == [config.DEFAULT_DB]
    assert len(config.store_paths(["--db", "a.duckdb", "--db", "c.duckdb"], {})) == 2


def test_slices_use_radiological_orientation():
    volume = np.zeros((4, 5, 6))
    volume[3, 0, 2] = 1          # patient's right (high x), posterior (low y)
    axial = slices.cut(volume, "axial", 2)
    assert axial.shape == (5, 4)                      # rows: y, columns: x
    assert axial[-1, 0] == 1                          # right on the viewer's left, posterior at the bottom
    volume[:] = 0
    volume[0, 4, 5] = 1          # patient's left, anterior, superior
    sagittal = slices.cut(volume, "sagittal", 0)
    assert sagittal.shape == (6, 5) and sagittal[0, 0] == 1   # superior top, anterior left
    assert slices.pixel_spacing((1.0, 2.0, 3.0), "axial") == (2.0, 1.0)
    assert slices.pixel_spacing((1.0, 2.0, 3.0), "coronal") == (3.0, 1.0)


def test_window_presets_and_compose():
    assert slices.window(np.array([-1350.0, -600.0, 150.0]), *slices.WINDOW_PRESETS["lung"]).tolist() == [0.0, 0.5, 1.0]
    hu = np.full((8, 8), 40.0)
    pred = np.zeros((8, 8), np.uint8)
    pred[2:6, 2:6] = 3
    attr = np.zeros((8, 8))
    attr[3, 3], attr[4, 4], attr[0, 0] = 1.0, -1.0, 0.01
    style = slices.OverlayStyle(*slices.WINDOW_PRESETS["mediastinum"], show_gt=True, hide_below_percentile=50)
    rgb = slices.compose(hu, pred, pred, attr, style)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert rgb[3, 3, 0] > rgb[3, 3, 2] and rgb[4, 4, 2] > rgb[4, 4, 0]   # red positive, blue negative
    plain = slices.compose(hu, None, None, None, style)
    assert (rgb[0, 0] == plain[0, 0]).all()                             # below the percentile: hidden
    assert slices.boundaries(pred).sum() == 12


def test_view_planes_show_attribution_only_at_the_stored_slice():
    ct = np.zeros((6, 5, 4), np.int16)
    arrays = {"ct": ct, "pred": ct.astype(np.uint8), "spacing": np.ones(3),
              "index_2": np.array([1, 2, 3]), "attr_2_z": np.ones((6, 5), np.float16)}
    artifact = artefact.CaseArtifact(arrays)
    assert artefact.view_planes(artifact, "axial", 3, 2).attr.shape == (5, 6)
    assert "slice 3" in artefact.view_planes(artifact, "axial", 0, 2).note
    assert artefact.view_planes(artifact, "coronal", 2, 2).attr is None
    assert artefact.view_planes(artifact, "axial", 3, 7).attr is None


def test_matrix_edges_and_layout():
    long = pd.DataFrame({"target_id": [1, 1, 2, 2], "source_id": [1, 2, 1, 2], "mean": [0.7, 0.3, 0.4, 0.6]})
    targets, sources, matrix = analytics.matrix_from_long(long)
    assert targets == [1, 2] and matrix[1, 0] == 0.4
    edges = analytics.top_k_edges(matrix, targets, sources, k=1)
    assert list(zip(edges.source_id, edges.target_id)) == [(2, 1), (1, 2)]
    assert len(analytics.top_k_edges(matrix, targets, sources, k=1, include_self=True)) == 2
    layout = analytics.circular_layout([5, 6, 7], ["bone", "cardiovascular", "organ"])
    assert layout[6] == pytest.approx((0.0, 1.0))        # cardiovascular first, at the top
    assert all(abs(np.hypot(*p) - 1) < 1e-9 for p in layout.values())


def test_cohort_splits_and_counts():
    split = analytics.split_cohort(CASES, "sex", "F", "M")
    assert split.cases_a == ("a", "c") and split.cases_b == ("b", "e")
    split = analytics.split_cohort(CASES, "age", 50)
    assert split.cases_a == ("a", "e") and split.cases_b == ("b", "c")
    split = analytics.split_cohort(CASES, "pathology", "pleural_effusion")
    assert split.cases_a == ("c", "d")
    assert set(analytics.comparison_attributes(CASES)) == {"sex", "dataset", "split", "age", "pathology"}
    counts = analytics.case_counts(CASES)
    assert counts["age band"]["age band"].tolist() == ["< 40", "40–59", "60–79", "unknown"]
    assert counts["sex"].cases.sum() == 5


def test_method_table_looks_like_table_1():
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "method": ["kernelshap", "vg"],
                         "params": [{"partition": "semantic"}, {}]})
    summary = pd.DataFrame({"run_id": ["r1", "r1", "r2"], "dataset": ["tsv2"] * 3,
                            "metric": ["faithfulness", "efficiency_s", "faithfulness"],
                            "mean": [0.158, 857.0, 0.383], "std": [0.21, 604.0, 0.14], "n": [10, 10, 12]})
    table = analytics.method_table(summary, runs)
    assert table.method.tolist() == ["KernelSHAP (semantic)", "Vanilla Gradient"]
    assert table.columns[3] == "Faithfulness ↑" and table.iloc[0]["Faithfulness ↑"] == "0.158 ± 0.21"
    with_median = analytics.method_table(summary.assign(median=[0.1, 800.0, 0.4]), runs)
    assert with_median.iloc[0]["Faithfulness ↑"] == "0.1 (mean 0.158 ± 0.21)"


def test_export_names_and_csv():
    assert export.export_filename(["global heatmap", "abs", "vg-1", "sex-F"], "png") == \
        "agg2exp_global_heatmap_abs_vg-1_sex-f.png"
    assert export.table_csv(pd.DataFrame({"a": [1]})) == b"a\n1\n"


def test_synthetic_store_bulk_and_per_case_paths_agree(tmp_path):
    import duckdb as db
    from synthetic_store import build_synthetic_store

    one = build_synthetic_store(tmp_path / "a" / "s.duckdb", n_cases=8, with_artifacts=3, bulk=False)
    two = build_synthetic_store(tmp_path / "b" / "s.duckdb", n_cases=8, with_artifacts=3, bulk=True)
    tables = ["cases", "rois", "local_importance", "dice", "artifacts", "anomaly", "anomaly_dice", "outlier_tests",
              "method_eval", "perturbation_curve", "failures"]
    for table in tables:
        a = db.connect(str(one["path"]), read_only=True).execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        b = db.connect(str(two["path"]), read_only=True).execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert a == b and a > 0, table
    status = db.connect(str(two["path"]), read_only=True).execute(
        "SELECT count(*), count(finished_at) FROM case_status").fetchone()
    assert status == (8, 8)


def test_context_mass_summary_and_permutation_choice():
    rois = [analytics.Roi(1, "heart", "cardiovascular", "#d62728", True), analytics.Roi(2, "ribs", "bone", "#1f77b4", True)]
    boxes = pd.DataFrame({"target_id": [2, 1, 1, 3], "dataset": ["r", "r", "e", "r"], "n": [2, 1, 1, 5],
                          "mean": [0.3, 0.5, 0.3, 0.1], "q1": [0.25, 0.5, 0.3, 0.1], "median": [0.3, 0.5, 0.3, 0.1],
                          "q3": [0.35, 0.5, 0.3, 0.1]})
    summary = analytics.context_mass_summary(boxes, rois)
    assert summary["class"].tolist() == ["heart", "heart", "ribs"]       # class order, then dataset; 3 left out
    assert summary.dataset.tolist() == ["e", "r", "r"] and summary.iloc[2]["mean"] == pytest.approx(0.3)
    assert analytics.permutation_count("5000", 323, 0.05, True) == 5000
    assert analytics.permutation_count("auto", 323, 0.05, True) == 13000
    assert analytics.permutation_count("auto", 323, 0.05, False) == 1000


def test_agreement_caption_states_the_volume_only_null():
    from dashboard.views.methods import _null_text

    pooled = pd.DataFrame({"kind": ["lift"], "null_mean": [0.002], "null_high": [0.059]})
    assert _null_text(pooled) == (" Compared on the volume-adjusted mass (lift): two independent noise maps on the "
                                  "same region volumes reach 0.002 (95th percentile 0.059).")
    assert _null_text(pooled.assign(null_mean=[None])) == "" and _null_text(pooled.iloc[:0]) == ""
