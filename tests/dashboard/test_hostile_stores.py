"""Hostile strings against the dashboard: no SQL built from user strings, case ids and
paths from the URL validated against the store, artefacts read only inside its folder.

Four angles: a static scan (the dashboard runs no SQL: its reads are the core's
``agg2exp_core.store.queries``, whose SQL text interpolates only fixed fragments); every
query function of ``dashboard.data`` called with hostile values while the SQL text is recorded; and the
real app (AppTest) opened with hostile query parameters on its pages; and what the app
writes as Markdown, parsed by a CommonMark parser: values from outside never become links.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from agg2exp_core.store import queries
from agg2exp_core.store.queries import connection
from agg2exp_core.vocabulary import MASS_KINDS
from dashboard import data, data_quality, filters, text
from synthetic_store import read_sql

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILES = sorted([ROOT / "app.py", *(ROOT / "dashboard").rglob("*.py"), *(ROOT / "app_pages").glob("*.py")])
HOSTILE = [
    "'; DROP TABLE cases; --",
    "x' OR '1'='1",
    '"; DROP TABLE runs; --',
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "c0\x00; DELETE FROM local_importance",
    "$1 ?; SELECT * FROM duckdb_settings()",
    "%s %(x)s {0}",
    "\u202eevil",
]
MARKERS = ("DROP", "DELETE", "passwd", "win.ini", "OR '1'", "duckdb_settings", "evil", "%(x)s")
# Calls that run SQL (DataFrame.query and pandas readers are not SQL and stay allowed).
SQL_CALLS = {"execute", "executemany", "sql", "from_query", "query_df", "install_extension", "load_extension"}
SQL_WORDS = ("SELECT ", "FROM ", "WHERE ", "WITH ", " IN (", " IS NULL", "contains(")
QUERIES = ROOT / "agg2exp_core" / "store" / "queries"
# Names that may be interpolated into the queries' SQL text: each holds a fixed fragment
# (a column from vocabulary.MASS_KINDS, a condition from cohort.where_clause, a constant
# sub-query, fixed value/group fragments of the box statistics, a validated identifier, a
# fixed column name, the store's alias, the schema's column list, a run of '?' placeholders, or a
# metadata field condition's fixed sub-query and bound terms, a module's constant column list).
ALLOWED_SQL_NAMES = {"column", "condition", "dice_of_case", "rows", "values", "groups", "details", "alias",
                     "pathologies", "known", "ALIAS", "BUILD_COLUMNS", "field_rows", "bound_terms",
                     "RETEST_COLUMNS", "SLICE_TABLE_COLUMNS"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------ static scan
def test_the_dashboard_runs_no_sql_and_the_queries_sql_text_has_only_fixed_fragments():
    for path in DASHBOARD_FILES:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert node.func.attr not in SQL_CALLS, f"{where} runs SQL in the dashboard"
            assert ast.unparse(node.func) not in {"queries.fetch", "connection.fetch", "duckdb.connect"}, \
                f"{where} queries the store outside the core's queries"
    for path in sorted(QUERIES.glob("*.py")):
        name, allowed = path.name, ALLOWED_SQL_NAMES
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if not any(w in text for w in SQL_WORDS):
                    continue
                for part in node.values:
                    if isinstance(part, ast.FormattedValue):
                        names = {n.id for n in ast.walk(part.value) if isinstance(n, ast.Name)} - {"len"}
                        assert names <= allowed, f"{name}:{node.lineno} puts {names - allowed} into SQL text"
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and \
                    isinstance(node.left, ast.Constant) and any(w in str(node.left.value) for w in SQL_WORDS):
                raise AssertionError(f"{name}:{node.lineno} formats SQL with %")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "format" and \
                    isinstance(node.func.value, ast.Constant) and any(w in str(node.func.value.value) for w in SQL_WORDS):
                raise AssertionError(f"{name}:{node.lineno} formats SQL with .format()")
    # the fixed fragments really are fixed
    assert set(MASS_KINDS.values()) == {"mass_abs", "mass_pos", "mass_neg", "mass_lift"}
    for kind in ("abs; DROP TABLE cases", "mass_abs", "", "ABS"):
        with pytest.raises(ValueError):
            queries.mass_column(kind)
    with pytest.raises(ValueError):
        queries.where_clause(filters.CohortFilter(), "c; DROP TABLE cases")


# ------------------------------------------------------------------ every query function
@pytest.fixture
def recorded(monkeypatch):
    """Every (sql, params) the dashboard sends to DuckDB during the test."""
    log: list[tuple[str, list]] = []
    original = connection.fetch

    def spy(con, sql, params=(), **kwargs):
        log.append((sql, list(params)))
        return original(con, sql, params, **kwargs)

    monkeypatch.setattr(connection, "fetch", spy)
    data.st.cache_data.clear()
    yield log
    data.st.cache_data.clear()


def assert_sql_is_clean(log):
    assert log, "nothing was queried"
    for sql, _ in log:
        for marker in MARKERS:
            assert marker not in sql, f"a user string reached the SQL text: {sql[:300]}"


def hostile_filters():
    yield filters.CohortFilter(datasets=tuple(HOSTILE), splits=(HOSTILE[1],), sexes=(HOSTILE[2],),
                               pathology=HOSTILE[0])
    for value in HOSTILE:
        yield filters.CohortFilter(pathology=value)


def test_every_query_function_keeps_hostile_values_out_of_the_sql(synthetic_store, recorded):
    path = synthetic_store["path"]
    before = sha256(path)
    ref = data.store_ref(path)
    run_id = next(iter(synthetic_store["run_ids"].values()))
    real_case = synthetic_store["case_ids"][0]
    covered = set()

    def call(fn, *args, **kwargs):
        covered.add(fn.__name__)
        return fn(ref, *args, **kwargs)

    for value in HOSTILE:
        for fn in (data.run_cases, data.anomaly_targets, data.anomaly_dice, data.outlier_tests,
                   data.artifact_cases):
            result = call(fn, value)
            assert len(result) == 0, (fn.__name__, value)
        for fn in (data.cohort_cases, data.global_matrix):
            assert call(fn, value, filters.CohortFilter()).empty
        for fn in (data.context_mass_distribution, data.dice_distribution):
            assert call(fn, value, filters.CohortFilter()).boxes.empty
        assert call(data.source_distribution, value, filters.CohortFilter(), 1).points.empty
        assert call(data.anomaly_ranking, value, filters.CohortFilter(), -1).empty
        assert call(data.case_matrix, run_id, value).empty, "an unknown case id matches nothing"
        assert call(data.case_matrix, value, real_case).empty
        assert call(data.local_cube, run_id, [value, real_case])[0] == [real_case]
        assert call(data.local_cube, value, [real_case])[0] == []
        for fn in (data.method_eval_summary, data.perturbation_summary):
            assert call(fn, (value, run_id + value), filters.CohortFilter()).empty
        assert call(data.evaluated_case_count, (value,)) == 0
        for fn in (data.global_matrix, data.case_matrix, data.local_cube):
            with pytest.raises(ValueError):
                fn(ref, run_id, *({data.global_matrix: (filters.CohortFilter(),), data.case_matrix: (real_case,),
                                   data.local_cube: ([real_case],)}[fn]), kind=value)
        for fn in (data.source_distribution, data.anomaly_ranking):
            with pytest.raises((ValueError, TypeError)):
                fn(ref, run_id, filters.CohortFilter(), value)
        # the causal tables (signed effects, components, relevance masks)
        for fn in (data.causal_summary, data.component_effects):
            assert call(fn, value, filters.CohortFilter()).empty
        assert call(data.causal_target_values, value, filters.CohortFilter(), 1).empty
        assert call(data.component_effects, run_id, filters.CohortFilter(), value).empty
        assert call(data.causal_case, run_id, value).empty and call(data.relevance_masks, value, real_case).empty
        assert call(data.sampling_noise, value, real_case).empty and call(data.sampling_noise, run_id, value).empty
        # the analyses' tables (drift, expected Dice, outlier reasons, intervals, agreement, paper parity)
        for fn in (data.drift_tests, data.dice_estimate_quality, data.method_agreement, data.paper_parity):
            assert call(fn, value).empty
        assert call(data.analysis_settings, value) == {}
        assert call(data.drift_cells, run_id, value).empty and call(data.drift_cells, value, "default").empty
        assert call(data.drift_cases, value, filters.CohortFilter(), -1).empty
        assert call(data.dice_estimates, value, -1).empty and call(data.case_dice_estimates, run_id, value).empty
        for target in (-1, 1):
            assert call(data.outlier_reasons, run_id, value, target).empty
        assert call(data.stored_intervals, run_id, value, "abs").empty
        assert call(data.stored_intervals, run_id, "*", value).empty
        assert call(data.method_disagreement, run_id, value).empty
        for fn in (data_quality.quality_ablation, data_quality.flagged_cells, data_quality.estimate_truth):
            assert len(call(fn, value)) == 0
        assert call(data_quality.risk_coverage, value, "external").empty
        assert call(data_quality.risk_coverage, run_id, value).empty
        assert call(data_quality.quality_contributions, run_id, value, 1).empty
        assert call(data_quality.quality_contributions, value, real_case, 1).empty
        assert call(data.global_matrix_spread, value, filters.CohortFilter()).empty
        # this round's reads: metadata fields, failure slices, sanity checks, test-retest ICC
        assert call(data.run_fields, value).columns.tolist() == ["case_id"]
        assert call(data.failure_slices, value).empty
        assert all(len(part) == 0 for part in call(data.failure_slice_detail, value, 1).values())
        assert call(data.retest_icc, value, "smoothgrad_seed").empty and call(data.retest_icc, run_id, value).empty
        assert call(data.sanity_curves, value).empty and call(data.sanity_verdicts, value).empty
        assert data.has_table(ref, value) is False
        covered.add("has_table")
        assert call(data.artifact_root_of, value) is None, "a run id names no artefact root"
    for cohort in hostile_filters():
        assert call(data.cohort_cases, run_id, cohort).empty
        assert call(data.global_matrix, run_id, cohort).empty
    for fn in (data.table_names, data.runs, data.rois, data.evaluated_runs, data.build_status, data.field_catalog,
               data.sanity_runs):
        call(fn)
    assert_sql_is_clean(recorded)
    # hostile values travelled as parameters, intact
    params = [p for _, ps in recorded for p in ps]
    assert all(v in params for v in HOSTILE)

    public = {name for module in (data, data_quality) for name, fn in vars(module).items()
              if callable(fn) and not name.startswith("_") and "ref" in getattr(inspect.signature(fn), "parameters", {})
              and name not in {"StoreRef"}}
    assert public - covered <= {"resolve_artifact"}, f"query functions not exercised: {public - covered}"

    assert sha256(path) == before, "reading must never change the store"
    counts = read_sql(ref, "SELECT (SELECT count(*) FROM cases) AS c, (SELECT count(*) FROM runs) AS r, "
                             "(SELECT count(*) FROM local_importance) AS li")
    assert counts.iloc[0].tolist()[0] == synthetic_store["n_cases"] and counts.iloc[0].tolist()[2] > 0


def test_artefact_paths_stay_inside_the_store_folder(synthetic_store, tmp_path):
    path = synthetic_store["path"]
    ref = data.store_ref(path)
    run_id = next(iter(synthetic_store["run_ids"].values()))
    relative = next(iter(data.artifact_cases(ref, run_id).values()))
    assert data.resolve_artifact(ref, relative) is not None, "a real artefact resolves"
    outside = tmp_path / "secret.npz"
    outside.write_bytes(b"not yours")
    link = ref.folder / "artifacts" / "escape.npz"
    link.parent.mkdir(exist_ok=True)
    try:
        link.symlink_to(outside)
        for hostile in [*HOSTILE, "", str(outside), "artifacts/../../" + outside.name,
                        os.path.relpath(outside, ref.folder), "artifacts/escape.npz"]:
            if "\x00" in hostile:
                continue
            resolved = data.resolve_artifact(ref, hostile)
            assert resolved is None, (hostile, resolved)
    finally:
        link.unlink(missing_ok=True)


# ------------------------------------------------------------------ the app itself
HOSTILE_PARAMS = {
    "run": "'; DROP TABLE runs; --",
    "case": "../../etc/passwd",
    "store": "/etc/passwd",
    "dataset": "x' OR '1'='1",
    "sex": '"; DROP TABLE cases; --',
    "split": "..\\..\\windows\\win.ini",
    "pathology": "'; DELETE FROM local_importance; --",
    "age_min": "1; DROP TABLE cases",
    "target": "1 OR 1=1",
    "kind": "mass_abs FROM cases; --",
    "view": "<script>alert(1)</script>",
}


@pytest.mark.parametrize("page", ["overview", "case_viewer", "outliers", "heat_map"])
def test_app_with_hostile_query_params_stays_harmless(monkeypatch, synthetic_store, recorded, page):
    path = synthetic_store["path"]
    before = sha256(path)
    loads: list[str] = []
    original_load = data.load_artifact.__wrapped__ if hasattr(data.load_artifact, "__wrapped__") else None

    def spy_load(p, mtime_ns):
        loads.append(p)
        return original_load(p, mtime_ns)

    if original_load is not None:
        monkeypatch.setattr(data, "load_artifact", spy_load)
    monkeypatch.setenv("AGG2EXP_DB", str(path))
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params.update(HOSTILE_PARAMS)
    app.run()
    if page != "overview":
        app.switch_page(f"app_pages/{page}.py").run()
    assert not app.exception, [e.message for e in app.exception]
    warnings = " ".join(str(w.value) for w in app.warning)
    assert "Ignored URL parameter" in warnings
    assert_sql_is_clean(recorded)
    folder = Path(path).resolve().parent
    for loaded in loads:
        assert folder in Path(loaded).resolve().parents, f"read {loaded} outside the store folder"
    if page == "case_viewer":
        assert loads, "the case viewer fell back to a real case of the store"
        assert all(Path(p).stem in synthetic_store["case_ids"] for p in loads)
    for key in ("run", "case", "store", "dataset", "sex", "split", "pathology"):
        assert app.query_params.get(key) != [HOSTILE_PARAMS[key]], f"hostile {key} kept in the URL"
    assert sha256(path) == before


# ------------------------------------------------------------------ values shown as literal text
COMMONMARK = MarkdownIt("commonmark")
MARKDOWN_PARAMS = {
    "run": "[Sign in again](https://evil.example)",
    "store": "[Sign in again](https://evil.example/store)",
    "dataset": "![pixel](https://evil.example/t.png)",
    "sex": "<a href='https://evil.example'>x</a>",
    "pathology": "https://evil.example/bare",
    "age_min": "www.evil.example",
    "kind": ":red[evil.example] :material/warning: $x$",
    "target": "``` ``evil.example`` ```",
    "order": "[x]: https://evil.example",
}


def markdown_outside_code(body: str) -> tuple[str, set[str]]:
    """(text of ``body`` outside code spans, token types there) as a CommonMark parser reads it."""
    outside, kinds = [], set()
    for block in COMMONMARK.parse(body):
        for token in block.children or []:
            kinds.add(token.type)
            if token.type != "code_inline":
                outside.append(token.content)
    return " ".join(outside), kinds


def markdown_bodies(app) -> list[str]:
    kinds = ("title", "header", "subheader", "caption", "markdown", "warning", "error", "info", "success")
    return [str(e.value) for kind in kinds for e in getattr(app, kind)]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_literal_shows_any_value_verbatim(value):
    shown = text.visible(value) or "''"
    expected = shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    assert COMMONMARK.renderInline(text.literal(value)) == f"<code>{expected}</code>"
    assert text.visible(value).isprintable()


def test_literal_cuts_long_values_and_escapes_controls():
    assert COMMONMARK.renderInline(text.literal("a" * 500)) == f"<code>{'a' * text.LIMIT}…</code>"
    assert text.visible("ok\u202eevil\n") == "ok\\u202eevil\\n", "bidi override and newline made visible"
    assert text.parameter("run", "x'y") == '`run="x\'y"`'


@pytest.mark.parametrize("page", ["overview", "heat_map"])
def test_url_values_are_shown_as_literal_text(monkeypatch, synthetic_store, page):
    """?run=[Sign in again](https://evil.example) shows those characters, never a live link."""
    monkeypatch.setenv("AGG2EXP_DB", str(synthetic_store["path"]))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params.update(MARKDOWN_PARAMS)
    app.run()
    if page != "overview":
        app.switch_page(f"app_pages/{page}.py").run()
    assert not app.exception, [e.message for e in app.exception]
    bodies = markdown_bodies(app)
    warnings = " ".join(str(w.value) for w in app.warning)
    assert "[Sign in again](https://evil.example)" in warnings, "the hostile value is shown (so this test can fail)"
    for body in bodies:
        outside, kinds = markdown_outside_code(body)
        assert "evil.example" not in outside, body
        assert not kinds & {"link_open", "image", "html_inline", "autolink"}, body
