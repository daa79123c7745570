"""Agreement between attribution methods: do two runs explain the same cases alike?

For two runs over the same cases (e.g. VG and SmoothGrad of one model) and target class
a, each common case gives the Spearman rank correlation of its two rows ``E_x[a, :]`` over
the model's class regions (do the methods order the sources alike?); the class's
agreement is the mean over cases with a bootstrap interval over cases, and its median.
Target -1 pools every class. Where they disagree: per cell, both runs' means, their
difference and the mean absolute difference of the two methods' masses on the same case.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from agg2exp_core import store
from agg2exp_core.analysis.uncertainty import BootstrapConfig, bootstrap_mean
from agg2exp_core.vocabulary import AVERAGE_TARGET

MIN_COMMON_CASES = 3


def row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho of paired rows ``[n, d]`` (average ranks for ties); NaN for constant or missing rows."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    rho = np.full(len(a), np.nan)
    if not ok.any():
        return rho
    ra, rb = rankdata(a[ok], axis=1), rankdata(b[ok], axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho[ok] = (ra * rb).sum(axis=1) / np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    return rho


def agreement(cube_a: np.ndarray, cube_b: np.ndarray, targets: list[int],
              config: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """Per target (and -1 pooled): mean, interval and median of the case-level Spearman rho, n cases.

    ``cube_a``, ``cube_b``: ``[common cases, targets, class sources]`` in the same order.
    """
    rhos = np.stack([row_spearman(cube_a[:, t], cube_b[:, t]) for t in range(len(targets))], axis=1)
    interval = bootstrap_mean(rhos, config)
    pooled_values = np.nanmean(rhos, axis=1, keepdims=True) if np.isfinite(rhos).any() else rhos[:, :1]
    pooled = bootstrap_mean(pooled_values, config)
    rows = []
    for t, target in enumerate(targets):
        finite = rhos[np.isfinite(rhos[:, t]), t]
        rows.append([int(target), interval.estimate[t], interval.low[t], interval.high[t],
                     float(np.median(finite)) if len(finite) else np.nan, int(len(finite))])
    finite = pooled_values[np.isfinite(pooled_values[:, 0]), 0]
    rows.append([AVERAGE_TARGET, pooled.estimate[0], pooled.low[0], pooled.high[0],
                 float(np.median(finite)) if len(finite) else np.nan, int(len(finite))])
    return pd.DataFrame(rows, columns=["target_id", "spearman_mean", "spearman_low", "spearman_high",
                                       "spearman_median", "n_cases"])


def disagreement(cube_a: np.ndarray, cube_b: np.ndarray, targets: list[int], sources: list[int]) -> pd.DataFrame:
    """Per cell: mean of each run, their difference (a - b) and the mean absolute paired difference."""
    with np.errstate(invalid="ignore"):
        mean_a, mean_b = np.nanmean(cube_a, axis=0), np.nanmean(cube_b, axis=0)
        paired = np.nanmean(np.abs(cube_a - cube_b), axis=0)
    t_index, s_index = np.meshgrid(np.arange(len(targets)), np.arange(len(sources)), indexing="ij")
    frame = pd.DataFrame({"target_id": np.asarray(targets)[t_index.ravel()],
                          "source_id": np.asarray(sources)[s_index.ravel()], "mean_run": mean_a.ravel(),
                          "mean_other": mean_b.ravel(), "difference": (mean_a - mean_b).ravel(),
                          "mean_abs_difference": paired.ravel()})
    return frame.dropna(subset=["mean_abs_difference"]).reset_index(drop=True)


def common_cube(con, run_a: str, run_b: str) -> tuple[list[str], list[int], list[int], np.ndarray, np.ndarray]:
    """(common cases, common targets, common class sources, cube of a, cube of b), aligned."""
    cases_a, targets_a, sources_a, cube_a = store.local_matrices(con, run_a, "abs")
    cases_b, targets_b, sources_b, cube_b = store.local_matrices(con, run_b, "abs")
    class_ids = set(store.class_roi_ids(con))
    cases = sorted(set(cases_a) & set(cases_b))
    targets = sorted(set(targets_a) & set(targets_b))
    sources = sorted(set(sources_a) & set(sources_b) & class_ids)

    def take(case_list, target_list, source_list, cube):
        ci = {c: i for i, c in enumerate(case_list)}
        return cube[np.ix_([ci[c] for c in cases], [target_list.index(t) for t in targets],
                           [source_list.index(s) for s in sources])]

    if not cases:
        return [], targets, sources, np.zeros((0, 0, 0)), np.zeros((0, 0, 0))
    return (cases, targets, sources, take(cases_a, targets_a, sources_a, cube_a),
            take(cases_b, targets_b, sources_b, cube_b))


def analyze_agreement(con, run_id: str, config: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """Agreement of a run with every other run over the same cases; written in one transaction."""
    others = [r for r in store.matrix_runs(con).run_id if r != run_id]
    summaries, cells = [], []
    for other in others:
        cases, targets, sources, cube_a, cube_b = common_cube(con, run_id, other)
        if len(cases) < MIN_COMMON_CASES or not targets or len(sources) < 3:
            continue
        summaries.append(agreement(cube_a, cube_b, targets, config).assign(other_run_id=other))
        cells.append(disagreement(cube_a, cube_b, targets, sources).assign(other_run_id=other))
    summary_columns = ["run_id", "other_run_id", "target_id", "spearman_mean", "spearman_low", "spearman_high",
                       "spearman_median", "n_cases"]
    cell_columns = ["run_id", "other_run_id", "target_id", "source_id", "mean_run", "mean_other", "difference",
                    "mean_abs_difference"]
    summary = (pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=summary_columns[1:]))
    cell = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(columns=cell_columns[1:])
    store.replace_analysis(con, run_id, {"method_agreement": summary.assign(run_id=run_id)[summary_columns],
                                         "method_disagreement": cell.assign(run_id=run_id)[cell_columns]})
    return summary
