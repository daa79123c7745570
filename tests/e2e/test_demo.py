"""The built demo store tells the paper's story: pathology cases are lung-class outliers.

Runs on ``data/demo.duckdb``, or on the store named by ``AGG2EXP_DEMO_DB``; builds (or
completes) it here when its build is not complete (waiting for a build that is running,
e.g. the one ``make run`` started).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis import drift, paper
from agg2exp_core.analysis.outliers import pathology_auroc
from agg2exp_core.pipeline.demo import EVALUATION, LUNG_CLASSES, build_demo
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.vocabulary import VOLUME_TARGET

REPO = Path(__file__).resolve().parents[2]
# What the demo reaches, kept as a floor. The outliers compare the volume-adjusted lift since issue #20:
# 0.78 (VG) / 0.73 (SmoothGrad) on it, against 0.8+ on the raw mass, part of whose signal was volume.
AUROC_FLOOR = 0.7
DICE_FLOOR = 0.85

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_db():
    path = Path(os.environ.get("AGG2EXP_DEMO_DB", REPO / "data" / "demo.duckdb"))
    if not _complete(path):
        build_demo(path.parent, progress=False)
    con = store.connect(path, read_only=True)
    yield con
    con.close()


def _complete(path: Path) -> bool:
    if not path.is_file():
        return False
    with store.connect(path, read_only=True) as con:
        return store.build_complete(con)


def precompute_runs(con):
    return con.execute("SELECT run_id, method, model_sha256 FROM runs WHERE source = 'precompute'").fetchall()


def test_demo_has_all_methods_and_complete_matrices(demo_db):
    runs = precompute_runs(demo_db)
    assert {m for _, m, _ in runs} >= {"vg", "smoothgrad"}
    for run_id, _, _ in runs:
        per_case = demo_db.execute(
            "SELECT case_id, count(*) FROM local_importance l JOIN rois r ON r.roi_id = l.source_id "
            "WHERE run_id = ? AND r.is_class GROUP BY case_id", [run_id]).fetchall()
        assert len(per_case) == 36 and all(n == 17 * 17 for _, n in per_case)
        assert demo_db.execute("SELECT count(*) FROM failures WHERE run_id = ?", [run_id]).fetchone()[0] == 0


@pytest.mark.parametrize("method", ["vg", "smoothgrad"])
def test_pathology_cases_are_lung_outliers(demo_db, method):
    run_id = next(r for r, m, _ in precompute_runs(demo_db) if m == method)
    auroc = pathology_auroc(demo_db, run_id, LUNG_CLASSES, dataset="external")
    assert auroc >= AUROC_FLOOR, f"{method}: AUROC {auroc:.3f}"


def test_demo_model_segments_well_and_worse_with_pathology(demo_db):
    model = precompute_runs(demo_db)[0][2]
    dice = demo_db.execute(
        "SELECT c.dataset, c.pathologies <> '' AS sick, d.case_id, avg(d.dice) AS dice FROM dice d "
        "JOIN cases c USING (case_id) WHERE d.model_sha256 = ? AND d.class_id > 0 AND c.split = 'test' "
        "GROUP BY ALL", [model]).df()
    reference = dice[dice.dataset == "reference"].dice.mean()
    sick = dice[(dice.dataset == "external") & dice.sick].dice.mean()
    assert reference >= DICE_FLOOR, f"mean foreground Dice on reference test {reference:.3f}"
    assert sick < reference - 0.02


def test_every_evaluated_method_has_finite_numbers(demo_db):
    """The Methods page: every method of the demo's evaluation, every metric finite on both cases."""
    frame = demo_db.execute(
        "SELECT r.method, e.metric, count(DISTINCT e.case_id) AS cases, "
        "bool_and(e.value IS NOT NULL AND isfinite(e.value)) AS finite "
        "FROM method_eval e JOIN runs r USING (run_id) WHERE r.source = 'evaluate' GROUP BY ALL").df()
    assert set(frame.method) == set(EVALUATION["methods"])
    for metric in ("faithfulness", "sensitivity_avg", "complexity", "efficiency_s", "aopc", "abpc"):
        rows = frame[frame.metric == metric]
        assert set(rows.method) == set(EVALUATION["methods"]), metric
        assert rows.finite.all() and (rows.cases == EVALUATION["max_cases"]).all(), rows


def test_published_cohort_is_imported(demo_db):
    row = demo_db.execute("SELECT run_id FROM runs WHERE source = 'import'").fetchone()
    assert row is not None
    n = demo_db.execute("SELECT count(DISTINCT case_id) FROM local_importance WHERE run_id = ?", row).fetchone()[0]
    assert n == 32
    names = [r[0] for r in demo_db.execute("SELECT name FROM rois WHERE is_class ORDER BY roi_id").fetchall()]
    assert names[:17] == list(THORAX_LABELS)


@pytest.mark.parametrize("method", ["vg", "smoothgrad"])
def test_external_dataset_drifts_for_the_lung_classes(demo_db, method):
    run_id = next(r for r, m, _ in precompute_runs(demo_db) if m == method)
    """With and without the volume effect: on the raw mass every lung class drifts; the region volumes
    alone drift (the control row); on the volume-adjusted lift the lungs' evidence still moves."""
    tests = demo_db.execute("SELECT target_id, kind, q_value, q_value_raw FROM drift WHERE run_id = ? AND "
                            "dataset = 'external'", [run_id]).df().set_index("target_id")
    assert (tests.loc[LUNG_CLASSES].q_value_raw < 0.05).all(), tests.loc[LUNG_CLASSES].q_value_raw.to_dict()
    assert tests.loc[VOLUME_TARGET].kind == "volume" and tests.loc[VOLUME_TARGET].q_value < 0.05
    assert (tests.loc[LUNG_CLASSES].q_value < 0.05).any(), tests.loc[LUNG_CLASSES].q_value.to_dict()


def reference_halves_rejections(con, run_id: str, stratified: bool, n_splits: int = 20) -> float:
    """Share of class tests at p < 0.05 over random halves of the reference dataset."""
    case_ids, targets, sources, cube = store.local_matrices(con, run_id, "abs")
    meta = store.case_metadata(con, case_ids)
    reference = np.flatnonzero((meta.dataset == "reference").to_numpy())
    splits = meta.split.to_numpy()
    class_sources = [s for s in store.class_roi_ids(con) if s in sources]
    rows = [drift.class_rows(cube, t, sources, class_sources) for t in range(len(targets))]
    rng = np.random.default_rng(0)
    rejected = []
    for k in range(n_splits):
        strata = [reference[splits[reference] == v] for v in sorted(set(splits[reference]))] if stratified \
            else [reference]
        first = np.concatenate([rng.permutation(s)[:len(s) // 2] for s in strata])
        second = np.setdiff1d(reference, first)
        rejected += [drift.energy_test(r[first], r[second], 500, seed=100 * k + t)[1] < 0.05
                     for t, r in enumerate(rows)]
    return float(np.mean(rejected))


@pytest.mark.parametrize("method", ["vg", "smoothgrad"])
def test_random_halves_of_the_reference_do_not_drift(demo_db, method):
    """Halves stratified by split (train/test): the model's training cases explain differently from its test
    cases (they are segmented better), so unstratified halves mix a real difference; measured on the demo:
    3 % of class tests below 0.05 stratified, 11 % unstratified."""
    run_id = next(r for r, m, _ in precompute_runs(demo_db) if m == method)
    assert reference_halves_rejections(demo_db, run_id, stratified=True) <= 0.10


@pytest.mark.parametrize("method", ["vg", "smoothgrad"])
def test_expected_dice_on_the_external_cases(demo_db, method):
    """Fitted on the reference dataset (its held-out test cases), validated on the external cases."""
    run_id = next(r for r, m, _ in precompute_runs(demo_db) if m == method)
    metrics = dict(demo_db.execute("SELECT metric, value FROM dice_estimate_quality WHERE run_id = ? AND "
                                   "scope = 'external'", [run_id]).fetchall())
    # measured on a copy of the demo backfilled with case_uncertainty (branch qc-model's note): the 'all' feature
    # set reaches 0.67 (VG) / 0.64 (SmoothGrad), explanation features alone 0.81 / 0.80; coverage 0.88
    assert metrics["spearman_case_mean"] >= 0.6 and 0.7 <= metrics["coverage_class"] <= 0.95, metrics
    assert metrics["coverage_worst_class"] >= 0.6 and metrics["mae"] < metrics["mae_constant"], metrics
    n = demo_db.execute("SELECT count(DISTINCT case_id) FROM dice_estimate WHERE run_id = ?", [run_id]).fetchone()[0]
    assert n == 36


def test_every_analysis_is_in_the_demo_store(demo_db):
    runs = [r for r, _, _ in precompute_runs(demo_db)]
    for table in ("outlier_reasons", "bootstrap_ci", "drift_cells", "drift_cases", "method_agreement",
                  "failure_slice", "failure_slice_member", "failure_slice_cell"):
        counts = dict(demo_db.execute(f"SELECT run_id, count(*) FROM {table} GROUP BY run_id").fetchall())
        assert all(counts.get(r, 0) > 0 for r in runs), table
    imported = demo_db.execute("SELECT run_id FROM runs WHERE source = 'import'").fetchone()[0]
    parity = demo_db.execute("SELECT * FROM paper_parity WHERE run_id = ?", [imported]).df()
    assert paper.reproduces_table2(paper.parity_summary(parity))
    assert demo_db.execute("SELECT count(*) FROM region_attribution WHERE run_id = ?", [imported]).fetchone()[0] \
        == 32 * 17 * 17


def test_demo_has_the_sanity_checks_of_both_runs(demo_db):
    rows = demo_db.execute("SELECT r.method, count(DISTINCT s.class_id), max(s.step), count(DISTINCT s.case_id) "
                           "FROM sanity_check s JOIN runs r USING (run_id) GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("smoothgrad", 3, 31, 1), ("vg", 3, 31, 1)]  # 3 classes, 31 layers down to the input, 1 case


def test_demo_has_retest_icc_uncertainty_and_case_fields(demo_db):
    factors = demo_db.execute("SELECT r.method, t.factor, t.kind, count(t.icc), max(t.n_repeats) FROM retest_icc t "
                              "JOIN runs r USING (run_id) GROUP BY ALL ORDER BY ALL").fetchall()
    kinds = {(m, f, k) for m, f, k, n, _ in factors if n > 0}
    assert {("smoothgrad", "smoothgrad_seed", "abs"), ("smoothgrad", "smoothgrad_seed", "lift")} <= kinds
    assert {(m, "forest_seed", k) for m in ("vg", "smoothgrad") for k in ("anomaly_score", "outlier_reason")} <= kinds
    assert not any(m == "vg" and f == "smoothgrad_seed" for m, f, _ in kinds)   # VG's map ignores the seed
    features = demo_db.execute("SELECT count(DISTINCT case_id), count(DISTINCT feature) FROM case_uncertainty").fetchone()
    assert features[0] == 36 and features[1] >= 10
    fields = dict(demo_db.execute("SELECT name, count(*) FROM case_field GROUP BY 1").fetchall())
    assert {"scanner", "kernel", "site", "slice_thickness_mm"} <= set(fields) and set(fields.values()) >= {36}


@pytest.mark.parametrize("page", ["overview", "heat_map", "knowledge_graph", "class_distributions",
                                  "context_mass", "outliers", "drift", "failure_modes", "quality", "case_viewer",
                                  "methods"])
def test_every_dashboard_page_renders_on_the_demo_store(demo_db, monkeypatch, page):
    from apptest import open_app  # the dashboard suite's AppTest helper

    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    db = demo_db.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    app = open_app(monkeypatch, db, page, {"dataset": "external"})
    assert app.title and not app.error
    assert app.get("plotly_chart"), f"{page} shows no figure on the demo store"
    if page == "methods":  # the demo evaluates every method: the page shows them, not its empty state
        shown = " ".join(str(e.value) for e in app.get("markdown") + app.get("caption"))
        assert "No attribution-method evaluation" not in shown and "No evaluated case" not in shown
        assert any("randomisation" in chart.proto.spec for chart in app.get("plotly_chart"))  # the sanity curves
