"""Isolation Forest outliers: planted anomalies rank first, statistics against Dice and metadata."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.analysis import outliers
from agg2exp_core.analysis.outliers import AnalysisConfig, analyze, pathology_auroc, spearman_table
from agg2exp_core.labels import roi_specs


def planted_store(path, n_train=30, n_test=20, n_anomalous=5, seed=0):
    """Three classes; test cases 0..n_anomalous-1 put class 1's mass in the wrong region."""
    rng = np.random.default_rng(seed)
    with store.open_writer(path) as con:
        ids = store.upsert_rois(con, roi_specs(["bg", "lung", "heart"], ["effusion"]))
        store.ensure_run(con, "run", "vg", {}, "model", ["bg", "lung", "heart"], source="test")
        for i in range(n_train + n_test):
            split = "train" if i < n_train else "test"
            case_id = f"c{i:02d}"
            anomalous = split == "test" and i - n_train < n_anomalous
            base = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
            m = np.abs(base + rng.normal(0, 0.02, size=(3, 3)))
            if anomalous:
                m[1] = [0.5, 0.2, 0.3]
            m /= m.sum(axis=1, keepdims=True)
            extra = np.c_[m, np.full(3, 0.3)]  # effusion column: must not be used as a feature
            rows = store.importance_rows("run", case_id, [0, 1, 2], [0, 1, 2, 3], extra, extra, extra)
            dice = [["model", case_id, 1, 0.6 if anomalous else 0.9 + rng.normal(0, 0.01)]]
            store.write_case(con, "run", case_id, rows, dice, case_row={
                "case_id": case_id, "dataset": "ref", "split": split, "sex": "FM"[i % 2],
                "age": 30 + i, "pathologies": "effusion" if anomalous else ""})
    return ids


def test_planted_anomalies_rank_first_and_correlate_with_dice(tmp_path):
    db = tmp_path / "a.duckdb"
    planted_store(db)
    result = analyze(db, "run", AnalysisConfig(fit_split="train"))
    lung = result["anomaly"][result["anomaly"].target_id == 1].sort_values("score", ascending=False)
    assert set(lung.case_id[:5]) == {f"c{30 + k:02d}" for k in range(5)}
    assert lung.set_index("case_id").loc[[f"c{30 + k:02d}" for k in range(5)], "is_outlier"].all()
    spearman = result["spearman"].set_index("target_id")
    assert spearman.loc[1, "spearman_rho"] < -0.25 and spearman.loc[1, "n"] == 20  # test cases only
    with store.connect(db, read_only=True) as con:
        assert pathology_auroc(con, "run", [1]) == pytest.approx(1.0)
        tables = {t: con.execute(f"SELECT count(*) FROM {t} WHERE run_id = 'run'").fetchone()[0]
                  for t in ("anomaly", "anomaly_dice", "outlier_tests")}
    assert tables["anomaly"] == 50 * 4 and tables["anomaly_dice"] >= 2 and tables["outlier_tests"] > 0


def test_rerun_replaces_rows_and_is_deterministic(tmp_path):
    db = tmp_path / "a.duckdb"
    planted_store(db)
    first = analyze(db, "run", AnalysisConfig())["anomaly"]
    second = analyze(db, "run", AnalysisConfig())["anomaly"]
    pd.testing.assert_frame_equal(first, second)
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM anomaly").fetchone()[0] == len(first)


def test_spearman_known_answer():
    anomaly = pd.DataFrame({"case_id": list("abcd"), "target_id": 1, "score": [1, 2, 3, 4.0], "is_outlier": False})
    dice = pd.DataFrame({"case_id": list("abcd"), "target_id": 1, "dice": [0.9, 0.8, 0.7, 0.6]})
    table = spearman_table(anomaly, dice, set("abcd")).set_index("target_id")
    assert table.loc[1, "spearman_rho"] == pytest.approx(-1.0) and table.loc[1, "n"] == 4


@pytest.mark.slow   # > 15 s on 2 cores (make test-fast leaves it out)
def test_averaging_forests_over_seeds_removes_the_seed_lottery():
    """32 simulated cases whose class row drifts with a latent failure that lowers Dice: one 100-tree
    forest's Spearman(anomaly, Dice) depends on its seed; the score averaged over 20 seeds
    (``n_seeds``) varies far less between independent sets of 20 seeds (SD less than half)."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    latent = rng.random(32)
    rows = rng.dirichlet(np.ones(6) * 8, size=32) + 0.05 * latent[:, None] * rng.normal(size=(32, 6))
    dice = 0.9 - 0.05 * latent + rng.normal(0, 0.02, size=32)
    fit = np.ones(32, dtype=bool)
    rho = lambda score: spearmanr(score, dice)[0]  # noqa: E731
    config = outliers.AnalysisConfig(n_estimators=100, contamination="auto", n_seeds=20)
    groups = [outliers.seed_scores(rows, fit, replace(config, random_state=20 * g))[0] for g in range(4)]
    single = [rho(score) for score in groups[0]]
    averaged = [rho(scores.mean(axis=0)) for scores in groups]
    assert np.std(averaged, ddof=1) < 0.5 * np.std(single, ddof=1), (averaged, single)
    # isolation_scores is the average of seed_scores; one seed is the plain forest of that random_state
    score, _ = outliers.isolation_scores(rows, fit, replace(config, n_seeds=2))
    assert np.allclose(score, groups[0][:2].mean(axis=0))
    one = outliers.isolation_scores(rows, fit, replace(config, n_seeds=1, random_state=3))[0]
    assert np.allclose(one, -outliers.fit_forest(rows, replace(config, random_state=3)).score_samples(rows))


def test_parity_table_adjusts_the_per_label_p_values():
    from agg2exp_core.analysis import paper
    from agg2exp_core.vocabulary import AVERAGE_TARGET

    spearman = pd.DataFrame({"target_id": [1, 2, 3, AVERAGE_TARGET], "spearman_rho": [-0.5, -0.2, 0.1, -0.4],
                             "p_value": [0.01, 0.04, 0.03, 0.002], "n": 32})
    table = paper.parity_table(spearman, {1: "heart", 2: "aorta", 3: "sternum"})
    assert np.allclose(table.p_holm, [0.03, 0.06, 0.06, 0.002]) and np.allclose(table.q_bh, [0.03, 0.04, 0.04, 0.002])
    spread = paper.seed_spread([spearman, spearman.assign(spearman_rho=[0, 0, 0, -0.1], p_value=0.5)])
    assert spread["seed_rho_min"] == pytest.approx(0.1) and spread["seed_rho_max"] == pytest.approx(0.4)
    assert spread["seeds_significant"] == 1
