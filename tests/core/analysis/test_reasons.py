"""Outlier reasons: SHAP contributions of the Isolation Forests, exact and pointing at the planted cell."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from agg2exp_core import store
from agg2exp_core.analysis import outliers, reasons
from agg2exp_core.labels import roi_specs


def mean_path_length(forest: IsolationForest, x: np.ndarray) -> np.ndarray:
    """E[h(x)] of scikit-learn's forest, from its own score: score_samples = -2^(-E[h]/c(n))."""
    from sklearn.ensemble._iforest import _average_path_length

    return -np.log2(-forest.score_samples(x)) * _average_path_length([forest.max_samples_])[0]


def test_contributions_add_up_to_the_path_length_gap_and_find_the_odd_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    x[0, 4] = 9.0                                             # case 0 is odd in feature 4 only
    forest = IsolationForest(n_estimators=100, random_state=0).fit(x)
    contributions, expected = reasons.tree_contributions(forest, x)
    assert contributions.shape == (40, 6)
    assert np.allclose(contributions.sum(axis=1), expected - mean_path_length(forest, x), atol=1e-6)
    assert int(np.argmax(contributions[0])) == 4 and contributions[0, 4] > 3 * np.abs(contributions[0, :4]).max()
    # the more anomalous a case, the larger its total contribution
    assert np.corrcoef(contributions.sum(axis=1), -forest.score_samples(x))[0, 1] > 0.99


def test_outlier_reasons_of_a_store_rebuild_the_analysis_forests(tmp_path):
    rng = np.random.default_rng(1)
    names = ["background", "a", "b", "c"]
    db = tmp_path / "reasons.duckdb"
    with store.open_writer(db) as con:
        ids = store.upsert_rois(con, roi_specs(names))
        store.ensure_run(con, "run", "vg", {}, "m", names, source="precompute")
        for i in range(30):
            case_id = f"case{i:02d}"
            store.upsert_cases(con, pd.DataFrame([{"case_id": case_id, "dataset": "d", "split": "train"}]))
            m = rng.dirichlet([30] * 4, size=4)
            if i == 7:
                m[2] = [0.05, 0.05, 0.1, 0.8]                     # class b of case07 leans on c
            store.write_case(con, "run", case_id, store.importance_rows("run", case_id, ids.values(),
                                                                        ids.values(), m, m, m * 0))
    config = outliers.AnalysisConfig(n_estimators=100)
    outliers.analyze(db, "run", config)
    with store.open_writer(db) as con:
        table = reasons.outlier_reasons(con, "run")
        stored = con.execute("SELECT count(*), count(DISTINCT case_id) FROM outlier_reasons WHERE run_id = 'run'"
                             ).fetchone()
        scores = store.anomaly_scores(con, "run")
    assert stored == (30 * 4 * 4, 30)
    top = reasons.top_reasons(table, "case07", ids["b"], k=2)
    assert top.source_id.iloc[0] in (ids["c"], ids["b"]) and top.contribution.iloc[0] > 0
    # the forests are the analysis's: the case's total contribution orders the cases as its stored score
    b_scores = scores[scores.target_id == ids["b"]].set_index("case_id").score
    totals = table[table.target_id == ids["b"]].groupby("case_id").contribution.sum()
    assert totals.idxmax() == b_scores.idxmax() == "case07"
    assert np.corrcoef(totals.loc[b_scores.index], b_scores)[0, 1] > 0.99
    with store.open_writer(db) as con:                          # large cohorts: the most anomalous cases only
        few = reasons.outlier_reasons(con, "run", reasons.ReasonsConfig(max_cases=5))
    explained = set(few[few.target_id == ids["b"]].case_id)
    assert explained == set(b_scores.sort_values(ascending=False).index[:5])


def test_contributions_need_the_forest_s_features():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 3))
    forest = IsolationForest(n_estimators=50, random_state=0).fit(x)
    contributions, _ = reasons.tree_contributions(forest, x[:5])
    assert contributions.shape == (5, 3)
    with pytest.raises(Exception):
        reasons.tree_contributions(forest, x[:, :2])           # wrong feature count is an error, not garbage
