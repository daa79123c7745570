"""Outlier analysis of local RoI-importance matrices (Section 4.3 of the Agg2Exp paper).

One scikit-learn Isolation Forest per target class is fitted on the reference cases'
rows ``E_x[a, :]`` (masses of class a's attribution in every predicted class region) and
scores every case. Score sign: **higher = more anomalous** (``-score_samples``).
Then: Spearman anomaly vs Dice per class and averaged, and inliers vs outliers by sex
(Fisher exact) and age (Mann-Whitney U). The settings of an analysis are stored with it
(``analysis_settings``), so later analyses (outlier reasons, expected Dice) rebuild the
same forests. ``analysis.paper`` runs the paper's own settings.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from agg2exp_core import store
from agg2exp_core.analysis.masses import check_kind, comparison_cube
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import AVERAGE_TARGET as AVERAGE, COMPARISON_KIND


SCORE_CONVENTION = "higher = more anomalous (score = -IsolationForest.score_samples)"


@dataclass
class AnalysisConfig:
    fit_dataset: str | None = None     # None: any dataset
    fit_split: str | None = "train"    # None: any split
    contamination: float | str = 0.1   # or "auto" (scikit-learn's offset: outlier where score > 0.5)
    n_estimators: int = 200
    random_state: int = 0
    absent: str = "zero"               # a class absent from a case: "zero" row, or "drop" (no score)
    n_seeds: int = 1                   # forests per class (random_state, +1, ...), scores averaged
    kind: str = COMPARISON_KIND        # mass kind of the rows (volume-adjusted lift; "abs": raw mass)

    def __post_init__(self):
        check_kind(self.kind)
        if self.absent not in ("zero", "drop"):
            raise InputError("absent", f"must be 'zero' or 'drop', got {self.absent!r}")
        if self.contamination != "auto" and not 0 < float(self.contamination) <= 0.5:
            raise InputError("--contamination", "must lie in (0, 0.5] or be 'auto'")
        if int(self.n_seeds) < 1:
            raise InputError("n_seeds", f"must be at least 1, got {self.n_seeds}")

    def settings(self) -> dict:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict) -> "AnalysisConfig":
        names = {f.name for f in fields(cls)}
        settings = {"kind": "abs", **settings}  # analyses stored before the lift read raw masses
        return cls(**{k: v for k, v in settings.items() if k in names})


def class_features(con, run_id: str, kind: str = COMPARISON_KIND) -> tuple[list[str], list[int], list[int], np.ndarray]:
    """(case ids, target ids, class source ids, features ``[cases, targets, class sources]``) of a run.

    Features are the masses (of ``kind``) in the model's own predicted class regions only: extra
    RoIs (pathology annotations) would leak what the analysis is meant to discover.
    """
    class_ids = store.class_roi_ids(con)
    _, cases, targets, sources, cube = comparison_cube(con, run_id, kind)
    keep = [i for i, s in enumerate(sources) if s in class_ids]
    return cases, targets, [sources[i] for i in keep], cube[:, :, keep]


def fit_mask(meta: pd.DataFrame, config: AnalysisConfig) -> np.ndarray:
    mask = np.ones(len(meta), dtype=bool)
    if config.fit_dataset:
        mask &= (meta.dataset == config.fit_dataset).to_numpy()
    if config.fit_split:
        mask &= (meta.split == config.fit_split).to_numpy()
    return mask


def forest_inputs(features: np.ndarray, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit and score, which cases have a row) of one class ``[cases, sources]``.

    A class absent from a case's prediction has no attribution (NaN row): scored as all-zero
    masses ("zero", far from any normal row) or left out ("drop", as the paper does).
    """
    if config.absent == "drop":
        present = np.isfinite(features).all(axis=1)
        return np.nan_to_num(features, nan=0.0), present
    return np.nan_to_num(features, nan=0.0), np.ones(len(features), dtype=bool)


def fit_forest(x: np.ndarray, config: AnalysisConfig) -> IsolationForest:
    return IsolationForest(n_estimators=config.n_estimators, contamination=config.contamination,
                           random_state=config.random_state).fit(x)


def isolation_scores(features: np.ndarray, fit: np.ndarray, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly scores (higher = more anomalous) and outlier flags for one class ``[cases, sources]``.

    With ``n_seeds`` > 1 the scores and decision values of that many forests are averaged (an
    outlier: mean decision value below 0). Cases without a row (``absent="drop"``) get a NaN
    score and no outlier flag.
    """
    scores, decisions = seed_scores(features, fit, config)
    with np.errstate(invalid="ignore"):
        return scores.mean(axis=0), decisions.mean(axis=0) < 0


def seed_scores(features: np.ndarray, fit: np.ndarray, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """``[n_seeds, cases]`` anomaly scores and decision values of the forests seeded
    ``random_state, random_state + 1, ...`` (NaN where a case has no row or too few fit cases).

    On 32 cases one 100-tree forest decides which cases look anomalous: the Spearman rho of its
    scores with Dice moved from -0.34 to 0.06 over 50 seeds in simulation. Averaging over seeds
    removes that lottery (``benchmarks/statistics_calibration.py``)."""
    x, present = forest_inputs(features, config)
    n_seeds = int(config.n_seeds)
    scores, decisions = np.full((n_seeds, len(x)), np.nan), np.full((n_seeds, len(x)), np.nan)
    if (fit & present).sum() < 2:
        return scores, decisions
    for k in range(n_seeds):
        forest = fit_forest(x[fit & present], replace(config, random_state=int(config.random_state) + k))
        scores[k, present] = -forest.score_samples(x[present])
        decisions[k, present] = forest.decision_function(x[present])
    return scores, decisions


def anomaly_table(case_ids, targets, features, fit, config, seed_tables: list | None = None) -> pd.DataFrame:
    """Scores of every case and class and their average over classes; ``seed_tables`` (a list, optional)
    receives the same table of each single seed (for the spread over seeds)."""
    frames, per_seed = [], [[] for _ in range(int(config.n_seeds))]
    for t_index, target in enumerate(targets):
        scores, decisions = seed_scores(features[:, t_index, :], fit, config)
        with np.errstate(invalid="ignore"):
            score, outlier = scores.mean(axis=0), decisions.mean(axis=0) < 0
        frames.append(pd.DataFrame({"case_id": case_ids, "target_id": target, "score": score, "is_outlier": outlier}))
        for k, seed_score in enumerate(scores):
            per_seed[k].append(pd.DataFrame({"case_id": case_ids, "target_id": target, "score": seed_score,
                                             "is_outlier": decisions[k] < 0}))
    if seed_tables is not None and len(per_seed) > 1:
        seed_tables.extend(_with_average(pd.concat(f, ignore_index=True), case_ids, fit, config) for f in per_seed)
    return _with_average(pd.concat(frames, ignore_index=True), case_ids, fit, config)


def _with_average(per_class: pd.DataFrame, case_ids, fit, config) -> pd.DataFrame:
    per_class = per_class.dropna(subset=["score"])
    mean = per_class.groupby("case_id", sort=False)["score"].mean()
    fitted = mean[mean.index.isin(np.asarray(case_ids)[fit])]
    # "auto": scikit-learn's own offset, outlier where -score_samples > 0.5; else the fit cases' quantile
    threshold = 0.5 if config.contamination == "auto" else np.quantile(fitted, 1 - float(config.contamination))
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
    with store.open_writer(existing_store(db)) as con:
        result = compute(con, resolve_run(con, db, run_id), config)
        write(con, result, config)
    return result


def existing_store(db: str | Path) -> Path:
    if not Path(db).is_file():
        raise InputError(db, "store not found")
    return Path(db)


def resolve_run(con, db, run_id: str | None) -> str:
    """The given run (checked) or the newest one."""
    run_id = run_id or store.latest_run_id(con)
    if run_id is None:
        raise InputError(db, "the store has no runs; run precompute first")
    if not store.run_exists(con, run_id):
        raise InputError(db, f"no run '{run_id}' in the store")
    return run_id


@dataclass(frozen=True)
class FitCases:
    """The inputs of a run's forests: features ``[cases, targets, class sources]`` and the fit cases."""

    case_ids: list[str]
    targets: list[int]
    sources: list[int]
    features: np.ndarray
    meta: pd.DataFrame
    fit: np.ndarray
    fallback: bool


def fit_cases(con, run_id: str, config: AnalysisConfig) -> FitCases:
    """A run's forest inputs; without two reference cases the whole cohort is its own reference."""
    case_ids, targets, sources, features = class_features(con, run_id, config.kind)
    if not case_ids:
        raise InputError(run_id, "the run has no local importance rows")
    meta = store.case_metadata(con, case_ids)
    fit = fit_mask(meta, config)
    fallback = fit.sum() < 2
    if fallback:  # e.g. an imported test-only cohort: the cohort is its own reference
        fit = np.ones(len(case_ids), dtype=bool)
    return FitCases(case_ids, targets, sources, features, meta, fit, bool(fallback))


def compute(con, run_id: str, config: AnalysisConfig) -> dict:
    """Anomaly scores and their statistics of a run (nothing written); with ``n_seeds`` > 1 also
    ``seed_spearman``: the Spearman table of each single seed's forests."""
    inputs = fit_cases(con, run_id, config)
    seed_tables: list[pd.DataFrame] = []
    anomaly = anomaly_table(inputs.case_ids, inputs.targets, inputs.features, inputs.fit, config, seed_tables)
    dice = store.dice_of_model(con, store.run_model(con, run_id))
    evaluated = set(np.asarray(inputs.case_ids)[~inputs.fit]) if not inputs.fallback else set(inputs.case_ids)
    seed_spearman = [spearman_table(table, dice, evaluated) for table in seed_tables] if config.n_seeds > 1 else []
    return {"run_id": run_id, "n_cases": len(inputs.case_ids), "n_fit": int(inputs.fit.sum()),
            "fit_fallback": inputs.fallback, "anomaly": anomaly, "spearman": spearman_table(anomaly, dice, evaluated),
            "tests": group_tests(anomaly, inputs.meta), "meta": inputs.meta, "seed_spearman": seed_spearman}


def write(con, result: dict, config: AnalysisConfig, extra: dict[str, pd.DataFrame] | None = None) -> None:
    """The analysis tables of ``compute`` (and ``extra`` ones) and its settings, in one transaction."""
    run_id = result["run_id"]
    frames = {table: result[key].copy() for table, key in
              (("anomaly", "anomaly"), ("anomaly_dice", "spearman"), ("outlier_tests", "tests"))}
    for table, frame in (extra or {}).items():
        frames[table] = frame.copy()
    for frame in frames.values():
        frame.insert(0, "run_id", run_id)
    frames["analysis_settings"] = pd.DataFrame({
        "run_id": [run_id], "settings": [json.dumps({**config.settings(), "fit_fallback": result["fit_fallback"]})],
        "score_convention": [SCORE_CONVENTION], "created_at": [pd.Timestamp.now("UTC").tz_localize(None)]})
    store.replace_analysis(con, run_id, frames)  # one transaction: all tables or none


def stored_config(con, run_id: str) -> AnalysisConfig:
    """The settings the run's anomaly scores were computed with (defaults for older stores)."""
    settings = store.analysis_settings(con, run_id)
    return AnalysisConfig.from_settings(settings) if settings else AnalysisConfig()


def pathology_auroc(con, run_id: str, target_ids: list[int], dataset: str | None = None) -> float:
    """AUROC of the mean anomaly score over ``target_ids`` for 'has a pathology'."""
    frame = store.mean_anomaly_by_case(con, run_id, target_ids)
    if dataset:
        frame = frame[frame.dataset == dataset]
    has = frame.pathologies.fillna("") != ""
    if has.all() or not has.any():
        return float("nan")
    return float(roc_auc_score(has, frame.score))


