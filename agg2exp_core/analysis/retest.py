"""Test-retest reliability of the numbers a page shows: ICC per matrix cell across repeats.

Two sources of run-to-run variation are not the patient's: SmoothGrad's noise draws (its seed)
and the Isolation Forest's random trees (its seed). Each repeat re-measures the same cases; the
intraclass correlation says which share of a cell's variance across cases survives a repeat.

ICC(2,1) (Shrout & Fleiss 1979; McGraw & Wong's ICC(A,1)): two-way random effects, absolute
agreement, single measurement, from the two-way ANOVA mean squares of a ``cases x repeats``
table (rows: cases, columns: repeats):

    ICC = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)

Written here (a few lines, vectorised over every cell at once) because neither SciPy nor
scikit-learn has it and pingouin, which does, is not a dependency; tested against Shrout &
Fleiss's published example. Cells below ``RELIABLE_ICC`` (0.75, Koo & Li 2016's "good") are
flagged on the heat map's hover.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from agg2exp_core.analysis import outliers, reasons
from agg2exp_core.vocabulary import AVERAGE_TARGET

RELIABLE_ICC = 0.75
SMOOTHGRAD_SEED = "smoothgrad_seed"   # retest_icc.factor: SmoothGrad's noise draws
FOREST_SEED = "forest_seed"           # retest_icc.factor: the Isolation Forest's trees
SCORE_KIND = "anomaly_score"          # retest_icc.kind of a class's anomaly score (source_id = AVERAGE_TARGET)
REASON_KIND = "outlier_reason"        # retest_icc.kind of a cell's contribution to the anomaly score
COLUMNS = ["run_id", "factor", "kind", "target_id", "source_id", "icc", "n_cases", "n_repeats"]


def icc_2_1(values: np.ndarray) -> np.ndarray:
    """ICC(2,1) of ``values[cases, repeats, *cells]`` for every cell (NaN where undefined).

    Cases with a missing (non-finite) repeat are left out of that cell; a cell with fewer
    than 2 complete cases, or without any variance, has no ICC.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim < 2 or values.shape[1] < 2:
        raise ValueError(f"need [cases, repeats >= 2, ...], got shape {values.shape}")
    complete = np.isfinite(values).all(axis=1, keepdims=True)       # [cases, 1, *cells]
    n = complete.sum(axis=0)[0]                                      # complete cases per cell
    k = values.shape[1]
    x = np.where(complete, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        grand = x.sum(axis=(0, 1)) / (n * k)
        case_means = x.mean(axis=1)                                  # [cases, *cells]
        repeat_means = x.sum(axis=0) / n                             # [repeats, *cells]
        ss_cases = k * (np.where(complete[:, 0], case_means - grand, 0.0) ** 2).sum(axis=0)
        ss_repeats = n * ((repeat_means - grand) ** 2).sum(axis=0)
        ss_total = (np.where(complete, x - grand, 0.0) ** 2).sum(axis=(0, 1))
        ms_cases = ss_cases / (n - 1)
        ms_repeats = ss_repeats / (k - 1)
        ms_error = (ss_total - ss_cases - ss_repeats) / ((n - 1) * (k - 1))
        icc = (ms_cases - ms_error) / (ms_cases + (k - 1) * ms_error + k * (ms_repeats - ms_error) / n)
    return np.where((n >= 2) & (ss_total > 0), icc, np.nan)


def cell_table(run_id: str, factor: str, kind: str, values: np.ndarray, target_ids, source_ids) -> pd.DataFrame:
    """retest_icc rows of ``values[cases, repeats, targets, sources]``."""
    icc = icc_2_1(values)
    n_cases = np.isfinite(values).all(axis=1).sum(axis=0)
    t, s = np.meshgrid(np.asarray(target_ids, dtype=int), np.asarray(source_ids, dtype=int), indexing="ij")
    return pd.DataFrame({"run_id": run_id, "factor": factor, "kind": kind, "target_id": t.ravel(),
                         "source_id": s.ravel(), "icc": icc.ravel(), "n_cases": n_cases.ravel(),
                         "n_repeats": values.shape[1]})[COLUMNS]


def forest_seed_icc(con, run_id: str, n_seeds: int = 5, explain: bool = True,
                    n_estimators: int | None = None) -> pd.DataFrame:
    """ICC across Isolation-Forest seeds of every class's anomaly score and (``explain``) of every
    cell's contribution to it (outlier reasons), with the run's stored analysis settings
    (``n_estimators``: another forest size, to see what more trees buy)."""
    settings = replace(outliers.stored_config(con, run_id), n_seeds=1)
    if n_estimators is not None:
        settings = replace(settings, n_estimators=int(n_estimators))
    inputs = outliers.fit_cases(con, run_id, settings)
    seeds = [replace(settings, random_state=int(settings.random_state) + k) for k in range(n_seeds)]
    scores = np.full((len(inputs.case_ids), n_seeds, len(inputs.targets)), np.nan)
    contributions = np.full((len(inputs.case_ids), n_seeds, len(inputs.targets), len(inputs.sources)), np.nan)
    for t_index in range(len(inputs.targets)):
        x, present = outliers.forest_inputs(inputs.features[:, t_index, :], settings)
        if (inputs.fit & present).sum() < 2:
            continue
        for k, seeded in enumerate(seeds):
            forest = outliers.fit_forest(x[inputs.fit & present], seeded)
            scores[present, k, t_index] = -forest.score_samples(x[present])
            if explain:
                contributions[present, k, t_index], _ = reasons.tree_contributions(forest, x[present])
    frames = [cell_table(run_id, FOREST_SEED, SCORE_KIND, scores[..., None], inputs.targets, [AVERAGE_TARGET])]
    if explain:
        frames.append(cell_table(run_id, FOREST_SEED, REASON_KIND, contributions, inputs.targets, inputs.sources))
    return pd.concat(frames, ignore_index=True)


def unreliable_share(table: pd.DataFrame) -> float:
    """Share of the cells with an ICC that lie below ``RELIABLE_ICC``."""
    icc = table.icc.dropna()
    return float((icc < RELIABLE_ICC).mean()) if len(icc) else float("nan")
