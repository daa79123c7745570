"""Test-retest ICC(2,1): the published example, its estimand in simulation, the Isolation Forest's seeds."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core.analysis import outliers, retest
from agg2exp_core.analysis.outliers import AnalysisConfig
from agg2exp_core import store

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; their ICC(2,1) = 0.29.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
                         dtype=float)


def test_icc_reproduces_shrout_and_fleiss():
    assert retest.icc_2_1(SHROUT_FLEISS) == pytest.approx(0.2898, abs=5e-4)


def test_icc_is_computed_per_cell_and_leaves_out_incomplete_cases():
    cells = np.stack([SHROUT_FLEISS, 3 * SHROUT_FLEISS + 1, SHROUT_FLEISS], axis=-1)   # [cases, repeats, 3]
    cells[0, 2, 2] = np.nan                                       # case 0 lacks a repeat in cell 2
    icc = retest.icc_2_1(cells)
    assert icc[0] == pytest.approx(icc[1])                        # invariant to a linear change of units
    assert icc[2] == pytest.approx(retest.icc_2_1(SHROUT_FLEISS[1:]))


def test_icc_is_undefined_without_variance_or_repeats():
    assert np.isnan(retest.icc_2_1(np.ones((5, 3))))
    assert np.isnan(retest.icc_2_1(np.array([[1.0, 2.0], [np.nan, 1.0]])))  # one complete case
    with pytest.raises(ValueError, match="repeats >= 2"):
        retest.icc_2_1(np.ones((5, 1)))


@pytest.mark.parametrize("true_icc", [0.5, 0.9])
def test_icc_estimates_the_share_of_case_variance_in_simulation(true_icc):
    rng = np.random.default_rng(int(true_icc * 10))
    n_cells, n_cases, n_repeats = 4000, 20, 3
    case_effect = rng.normal(0, np.sqrt(true_icc), (n_cases, 1, n_cells))
    noise = rng.normal(0, np.sqrt(1 - true_icc), (n_cases, n_repeats, n_cells))
    icc = retest.icc_2_1(case_effect + noise)
    assert np.mean(icc) == pytest.approx(true_icc, abs=0.02)       # nearly unbiased at n = 20
    # a systematic offset of one repeat (absolute agreement) lowers it
    offset = case_effect + noise + np.array([0.0, 0.0, 1.0])[None, :, None]
    assert np.mean(retest.icc_2_1(offset)) < np.mean(icc) - 0.1


def _analysed_store(tmp_path, trees: int):
    from synthetic_store import build_synthetic_store

    built = build_synthetic_store(tmp_path / "s.duckdb", n_cases=30, with_artifacts=False, eval_methods=())
    outliers.analyze(built["path"], built["run_ids"]["vg"], AnalysisConfig(n_estimators=trees, fit_split=None))
    return built["path"], built["run_ids"]["vg"]


def test_more_trees_make_the_forest_seed_icc_higher(tmp_path):
    db, run_id = _analysed_store(tmp_path, 100)
    median = {}
    with store.connect(db, read_only=True) as con:
        for trees in (3, 100):
            scores = retest.forest_seed_icc(con, run_id, n_seeds=3, explain=False, n_estimators=trees)
            assert set(scores.kind) == {retest.SCORE_KIND} and set(scores.source_id) == {store.AVERAGE_TARGET}
            assert (scores.n_repeats == 3).all() and (scores.n_cases == 30).all()
            median[trees] = scores.icc.median()
    print(median)
    assert median[100] > 0.85 and median[3] < median[100] - 0.2


def test_outlier_reasons_get_an_icc_per_cell(tmp_path):
    db, run_id = _analysed_store(tmp_path, 10)
    with store.connect(db, read_only=True) as con:
        table = retest.forest_seed_icc(con, run_id, n_seeds=2)
        n_sources = len(store.class_roi_ids(con))
    scores, reasons = (table[table.kind == k] for k in (retest.SCORE_KIND, retest.REASON_KIND))
    assert len(reasons) == len(scores) * n_sources
    assert reasons.icc.notna().mean() > 0.5 and (reasons.icc.dropna() <= 1 + 1e-12).all()
