"""Explanation drift: the energy test's known answers, per-case scores, and the analysis on a store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.analysis import drift
from agg2exp_core.errors import InputError
from agg2exp_core.labels import roi_specs


def brute_energy(a, b):
    d = lambda x, y: np.linalg.norm(x[:, None] - y[None], axis=2).mean()  # noqa: E731
    return 2 * d(a, b) - d(a, a) - d(b, b)


def test_energy_distance_is_the_textbook_v_statistic():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 3)), rng.normal(1.0, 2.0, size=(5, 3))
    assert drift.energy_distance(a, b) == pytest.approx(brute_energy(a, b))
    assert drift.energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_energy_test_detects_a_shift_and_not_a_same_distribution():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    shifted = b + np.array([1.0, 0, 0, 0])
    _, p_shift = drift.energy_test(a, shifted, 999, seed=0)
    assert p_shift == pytest.approx(1 / 1000)           # nothing as extreme among 999 permutations
    p_null = [drift.energy_test(rng.normal(size=(15, 4)), rng.normal(size=(15, 4)), 199, seed=s)[1]
              for s in range(40)]
    assert 0.01 <= np.mean(np.array(p_null) < 0.05) <= 0.15   # about alpha under the null
    assert np.mean(p_null) == pytest.approx(0.5, abs=0.12)


def test_energy_test_is_deterministic_and_rejects_bad_shapes():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 2)), rng.normal(size=(12, 2))
    assert drift.energy_test(a, b, 300, seed=5) == drift.energy_test(a, b, 300, seed=5)
    with pytest.raises(ValueError, match="same d"):
        drift.energy_test(a, rng.normal(size=(5, 3)))
    assert np.isnan(drift.energy_test(a[:1], b)[1])     # one case: no test


def test_centred_log_ratios_are_scale_free_and_floor_zeros():
    rows = np.array([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])
    clr = drift.centred_log_ratios(rows)
    assert np.allclose(clr.sum(axis=1), 0)
    assert np.allclose(clr, drift.centred_log_ratios(rows * 7))     # compositions: only ratios matter
    assert np.isfinite(drift.centred_log_ratios(np.array([[1.0, 0.0, 0.0]]))).all()


def test_case_scores_are_near_zero_for_reference_cases_and_large_far_away():
    rng = np.random.default_rng(3)
    rows = np.concatenate([rng.normal(size=(20, 3)), rng.normal(size=(1, 3)) + 6, np.full((1, 3), np.nan)])
    reference = np.arange(20)
    is_reference = np.zeros(len(rows), dtype=bool)
    is_reference[reference] = True
    scores = drift.case_scores(rows, reference, is_reference)
    assert abs(np.mean(scores[:20])) < 0.15 and scores[20] > 4 and np.isnan(scores[21])


def test_hedges_g_known_answer():
    new, ref = np.array([[2.0], [4.0], [6.0]]), np.array([[0.0], [2.0], [4.0]])
    g = drift.hedges_g(new, ref)
    assert g[0] == pytest.approx(1.0 * (1 - 3 / (4 * 6 - 9)))       # d = 2 / 2, small-sample corrected
    assert np.isnan(drift.hedges_g(new[:1], ref)[0])


def _store(tmp_path, shift: float, seed: int = 3):
    """Two datasets of 20 cases, 3 classes; 'new' moves mass from class 0 to 1 in target 2's row."""
    rng = np.random.default_rng(seed)
    names = ["background", "a", "b"]
    db = tmp_path / "drift.duckdb"
    with store.open_writer(db) as con:
        ids = store.upsert_rois(con, roi_specs(names))
        store.ensure_run(con, "run", "vg", {}, "m", names, source="precompute")
        for dataset in ("ref", "new"):
            for i in range(20):
                case_id = f"{dataset}{i:02d}"
                store.upsert_cases(con, pd.DataFrame([{"case_id": case_id, "dataset": dataset, "split": "test"}]))
                m = rng.dirichlet([20, 20, 20], size=3)
                if dataset == "new":
                    m[2] = rng.dirichlet([20 * (1 - shift), 20 * (1 + shift), 20])
                store.write_case(con, "run", case_id, store.importance_rows("run", case_id, ids.values(),
                                                                            ids.values(), m, m, m * 0))
    return db, ids


def test_drift_analysis_finds_the_planted_class_only(tmp_path):
    db, ids = _store(tmp_path, shift=0.8)
    with store.open_writer(db) as con:
        result = drift.drift_analysis(con, "run", drift.DriftConfig("ref", n_permutations=999))
        tests = con.execute("SELECT target_id, q_value, n_ref, n_new, reference FROM drift ORDER BY 1").df()
        cells = con.execute("SELECT * FROM drift_cells WHERE target_id = ? ORDER BY q_value", [ids["b"]]).df()
        n_cases = con.execute("SELECT count(DISTINCT case_id) FROM drift_cases WHERE target_id = -1").fetchone()[0]
    q = dict(zip(tests.target_id, tests.q_value))
    assert q[ids["b"]] < 0.01 and q[ids["background"]] > 0.05 and q[ids["a"]] > 0.05
    assert set(tests.n_ref) == {20} and set(tests.n_new) == {20} and set(tests.reference) == {"ref"}
    moved = cells.iloc[:2]                                     # the two cells the mass moved between
    assert set(moved.source_id) == {ids["background"], ids["a"]} and (moved.q_value < 0.05).all()
    assert cells.set_index("source_id").loc[ids["a"], "difference"] > 0
    assert n_cases == 40 and len(result.cases)


def test_drift_of_an_unknown_reference_is_one_line_and_writes_nothing(tmp_path):
    db, _ = _store(tmp_path, shift=0.0)
    with pytest.raises(InputError, match="no dataset 'missing'.*datasets: new, ref"):
        with store.open_writer(db) as con:
            drift.drift_analysis(con, "run", drift.DriftConfig("missing"))
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM drift").fetchone()[0] == 0
