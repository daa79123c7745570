"""Outlier analysis of local RoI-importance matrices (Section 4.3 of the Agg2Exp paper).

One scikit-learn Isolation Forest per target class is fitted on the reference cases'
rows ``E_x[a, :]`` (masses of class a's attribution in every predicted class region) and
scores every case. Score sign: **higher = more anomalous** (``-score_samples``).
Then: Spearman anomaly vs Dice per class and averaged, and inliers vs outliers by sex
(Fisher exact) and age (Mann-Whitney U).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from agg2exp_core import store
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import AVERAGE_TARGET as AVERAGE


@dataclass
class AnalysisConfig:
    fit_dataset: str | None = None     # None: any dataset
    fit_split: str | None = "train"    # None: any split
    contamination: float = 0.1
    n_estimators: int = 200
    random_state: int = 0


def class_features(con, run_id: str) -> tuple[list[str], list[int], np.ndarray]:
    """(case ids, target ids, features ``[cases, targets, class sources]``) of a run.

    Features are the masses in the model's own predicted class regions only: extra RoIs
    (pathology annotations) would leak what the analysis is meant to discover.
    """
    class_ids = store.class_roi_ids(con)
    cases, targets, sources, cube = store.local_matrices(con, run_id, "abs")
    keep = [i for i, s in enumerate(sources) if s in class_ids]
    return cases, targets, cube[:, :, keep]


def fit_mask(meta: pd.DataFrame, config: AnalysisConfig) -> np.ndarray:
    mask = np.ones(len(meta), dtype=bool)
    if config.fit_dataset:
        mask &= (meta.dataset == config.fit_dataset).to_numpy()
    if config.fit_split:
        mask &= (meta.split == config.fit_split).to_numpy()
    return mask


def isolation_scores(features: np.ndarray, fit: np.ndarray, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly scores (higher = more anomalous) and outlier flags for one class ``[cases, sources]``.

    A class absent from a case's prediction has no attribution (NaN row); it is scored as
    all-zero masses, which lies far from any normal row.
    """
    x = np.nan_to_num(features, nan=0.0)
    forest = IsolationForest(n_estimators=config.n_estimators, contamination=config.contamination,
                             random_state=config.random_state).fit(x[fit])
    return -forest.score_samples(x), forest.predict(x) == -1


def anomaly_table(case_ids, targets, features, fit, config) -> pd.DataFrame:
    frames = []
    for t_index, target in enumerate(targets):
        score, outlier = isolation_scores(features[:, t_index, :], fit, config)
        frames.append(pd.DataFrame({"case_id": case_ids, "target_id": target, "score": score, "is_outlier": outlier}))
    per_class = pd.concat(frames, ignore_index=True)
    mean = per_class.groupby("case_id", sort=False)["score"].mean()
    threshold = np.quantile(mean[np.asarray(case_ids)[fit]], 1 - config.contamination)
    average = pd.DataFrame({"case_id": mean.index, "target_id": AVERAGE, "score": mean.to_numpy(),
                            "is_outlier": mean.to_numpy() > threshold})
    return pd.concat([per_class, average], ignore_index=True)


def spearman_table(anomaly: pd.DataFrame, dice: pd.DataFrame, evaluated: set[str]) -> pd.DataFrame:
    """Spearman rho of anomaly score vs Dice per class, and of the means (target -1)."""
    data = anomaly[anomaly.case_id.isin(evaluated)].merge(dice, on=["case_id", "target_id"], how="inner")
    mean_dice = data.groupby("case_id")["dice"].mean()
    avg = anomaly[(anomaly.target_id == AVERAGE) & anomaly.case_id.isin(mean_dice.index)]
    rows = []
    for target, group in data.groupby("target_id"):
        rows.append(_spearman_row(target, group.score, group.dice))
    if len(avg):
        rows.append(_spearman_row(AVERAGE, avg.score, avg.case_id.map(mean_dice)))
    return pd.DataFrame(rows, columns=["target_id", "spearman_rho", "p_value", "n"])


def _spearman_row(target, score, dice) -> list:
    score, dice = np.asarray(score, float), np.asarray(dice, float)
    ok = ~(np.isnan(score) | np.isnan(dice))
    if ok.sum() < 3 or np.ptp(score[ok]) == 0 or np.ptp(dice[ok]) == 0:
        return [int(target), np.nan, np.nan, int(ok.sum())]
    rho, p = stats.spearmanr(score[ok], dice[ok])
    return [int(target), float(rho), float(p), int(ok.sum())]


def group_tests(anomaly: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Inliers vs outliers per class: sex (Fisher exact on F/M) and age (Mann-Whitney U)."""
    data = anomaly.merge(meta[["case_id", "sex", "age"]], on="case_id")
    rows = []
    for target, group in data.groupby("target_id"):
        out, inl = group[group.is_outlier], group[~group.is_outlier]
        table = [[(inl.sex == s).sum(), (out.sex == s).sum()] for s in ("F", "M")]
        if min(len(out), len(inl)) and np.asarray(table).sum(axis=0).all() and np.asarray(table).sum(axis=1).all():
            odds, p = stats.fisher_exact(table)
            rows.append([int(target), "sex", "fisher_exact", float(odds), float(p), len(inl), len(out)])
        ages_in, ages_out = inl.age.dropna().astype(float), out.age.dropna().astype(float)
        if len(ages_in) and len(ages_out):
            u, p = stats.mannwhitneyu(ages_in, ages_out, alternative="two-sided")
            rows.append([int(target), "age", "mann_whitney_u", float(u), float(p), len(ages_in), len(ages_out)])
    return pd.DataFrame(rows, columns=["target_id", "variable", "test", "statistic", "p_value",
                                       "n_inliers", "n_outliers"])


def analyze(db: str | Path, run_id: str | None = None, config: AnalysisConfig = AnalysisConfig()) -> dict:
    """Fit the forests, score every case of a run, and write anomaly / statistics tables."""
    if not Path(db).is_file():
        raise InputError(db, "store not found")
    with store.open_writer(db) as con:
        run_id = run_id or store.latest_run_id(con)
        if run_id is None:
            raise InputError(db, "the store has no runs; run precompute first")
        if not store.run_exists(con, run_id):
            raise InputError(db, f"no run '{run_id}' in the store")
        case_ids, targets, features = class_features(con, run_id)
        if not case_ids:
            raise InputError(db, f"run '{run_id}' has no local importance rows")
        meta = store.case_metadata(con, case_ids)
        fit = fit_mask(meta, config)
        fallback = fit.sum() < 2
        if fallback:  # e.g. an imported test-only cohort: the cohort is its own reference
            fit = np.ones(len(case_ids), dtype=bool)
        anomaly = anomaly_table(case_ids, targets, features, fit, config)
        dice = store.dice_of_model(con, store.run_model(con, run_id))
        evaluated = set(np.asarray(case_ids)[~fit]) if not fallback else set(case_ids)
        spearman = spearman_table(anomaly, dice, evaluated)
        tests = group_tests(anomaly, meta)
        frames = {table: frame.copy() for table, frame in
                  (("anomaly", anomaly), ("anomaly_dice", spearman), ("outlier_tests", tests))}
        for frame in frames.values():
            frame.insert(0, "run_id", run_id)
        store.replace_analysis(con, run_id, frames)  # one transaction: all three tables or none
    return {"run_id": run_id, "n_cases": len(case_ids), "n_fit": int(fit.sum()), "fit_fallback": fallback,
            "anomaly": anomaly, "spearman": spearman, "tests": tests}


def pathology_auroc(con, run_id: str, target_ids: list[int], dataset: str | None = None) -> float:
    """AUROC of the mean anomaly score over ``target_ids`` for 'has a pathology'."""
    frame = store.mean_anomaly_by_case(con, run_id, target_ids)
    if dataset:
        frame = frame[frame.dataset == dataset]
    has = frame.pathologies.fillna("") != ""
    if has.all() or not has.any():
        return float("nan")
    return float(roc_auc_score(has, frame.score))


