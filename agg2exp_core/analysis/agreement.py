"""Agreement between attribution methods: do two runs explain the same cases alike?

For two runs over the same cases (e.g. VG and SmoothGrad of one model) and target class
a, each common case gives the Spearman rank correlation of its two rows ``E_x[a, :]`` over
the model's class regions (do the methods order the sources alike?); the class's
agreement is the mean over cases with a bootstrap interval over cases, and its median.
Target -1 pools every class. Where they disagree: per cell, both runs' means, their
difference and the mean absolute difference of the two methods' masses on the same case.

Volume: for any diffuse map the raw mass of a region is about its volume share, so two
unrelated maps rank the regions alike (two pure-noise maps: rho ~0.96 on raw mass). The rows
compared are the lift by default (``kind``), and every value comes with the agreement of
volume-only maps (``null_mean``, ``null_high`` = its 95th percentile): pairs of independent
noise maps on each case's own region volumes, ranked by the same measure.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from agg2exp_core import store
from agg2exp_core.analysis.masses import check_kind, comparison_cube
from agg2exp_core.analysis.uncertainty import BootstrapConfig, bootstrap_mean
from agg2exp_core.vocabulary import AVERAGE_TARGET, COMPARISON_KIND

MIN_COMMON_CASES = 3
NULL_DRAWS = 200
NULL_VOXELS = 100_000        # nominal voxels of a volume for the noise of the null maps
HALF_NORMAL_CV = float(np.sqrt(np.pi / 2 - 1))  # SD / mean of |N(0, 1)|: a noise map's voxel values


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


def volume_null(shares: np.ndarray, kind: str, draws: int = NULL_DRAWS, seed: int = 0) -> tuple[float, float]:
    """(mean, 95th percentile) of the case-mean Spearman rho of two independent noise maps per case.

    ``shares``: ``[cases, regions]`` volume shares. A noise map's mass in region b is a sum of
    ``share_b * NULL_VOXELS`` i.i.d. |N(0, 1)| voxels (normal approximation of the sum); rows are
    ranked as raw mass or as lift (mass / share). NaN without finite share rows.
    """
    shares = np.asarray(shares, dtype=float)
    shares = shares[np.isfinite(shares).all(axis=1) & (shares > 0).all(axis=1)]
    if not len(shares):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    voxels = shares * NULL_VOXELS

    def noise_rows():
        sums = voxels + HALF_NORMAL_CV * np.sqrt(voxels) * rng.standard_normal((draws, *voxels.shape))
        return sums / voxels if kind == "lift" else sums / sums.sum(axis=-1, keepdims=True)

    a, b = noise_rows(), noise_rows()
    means = np.nanmean(row_spearman(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])).reshape(draws, -1),
                       axis=1)
    return float(np.nanmean(means)), float(np.nanquantile(means, 0.95))


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


def common_cube(con, run_a: str, run_b: str, kind: str = COMPARISON_KIND
                ) -> tuple[str, list[str], list[int], list[int], np.ndarray, np.ndarray]:
    """(kind read, common cases, common targets, common class sources, cube of a, cube of b), aligned.

    Both runs are read in the same kind: the raw mass when either has no volumes.
    """
    kind_a, cases_a, targets_a, sources_a, cube_a = comparison_cube(con, run_a, kind)
    kind_b, cases_b, targets_b, sources_b, cube_b = comparison_cube(con, run_b, kind)
    if kind_a != kind_b:
        return common_cube(con, run_a, run_b, "abs")
    class_ids = set(store.class_roi_ids(con))
    cases = sorted(set(cases_a) & set(cases_b))
    targets = sorted(set(targets_a) & set(targets_b))
    sources = sorted(set(sources_a) & set(sources_b) & class_ids)

    def take(case_list, target_list, source_list, cube):
        ci = {c: i for i, c in enumerate(case_list)}
        return cube[np.ix_([ci[c] for c in cases], [target_list.index(t) for t in targets],
                           [source_list.index(s) for s in sources])]

    if not cases:
        return kind_a, [], targets, sources, np.zeros((0, 0, 0)), np.zeros((0, 0, 0))
    return (kind_a, cases, targets, sources, take(cases_a, targets_a, sources_a, cube_a),
            take(cases_b, targets_b, sources_b, cube_b))


def case_shares(con, run_id: str, cases: list[str], sources: list[int]) -> np.ndarray:
    """Volume shares ``[cases, sources]`` of a run's cases (NaN where unknown)."""
    share_cases, share_sources, shares = store.volume_shares(con, run_id)
    index = {c: i for i, c in enumerate(share_cases)}
    out = np.full((len(cases), len(sources)), np.nan)
    for j, s in enumerate(sources):
        if s in share_sources:
            out[:, j] = [shares[index[c], share_sources.index(s)] if c in index else np.nan for c in cases]
    return out


def analyze_agreement(con, run_id: str, config: BootstrapConfig = BootstrapConfig(),
                      kind: str = COMPARISON_KIND) -> pd.DataFrame:
    """Agreement of a run with every other run over the same cases, with the volume-only null; one transaction."""
    check_kind(kind)
    others = [r for r in store.matrix_runs(con).run_id if r != run_id]
    summaries, cells = [], []
    for other in others:
        used, cases, targets, sources, cube_a, cube_b = common_cube(con, run_id, other, kind)
        if len(cases) < MIN_COMMON_CASES or not targets or len(sources) < 3:
            continue
        null_mean, null_high = volume_null(case_shares(con, run_id, cases, sources), used, seed=config.seed)
        summaries.append(agreement(cube_a, cube_b, targets, config).assign(
            other_run_id=other, kind=used, null_mean=null_mean, null_high=null_high))
        cells.append(disagreement(cube_a, cube_b, targets, sources).assign(other_run_id=other))
    summary_columns = ["run_id", "other_run_id", "target_id", "spearman_mean", "spearman_low", "spearman_high",
                       "spearman_median", "n_cases", "kind", "null_mean", "null_high"]
    cell_columns = ["run_id", "other_run_id", "target_id", "source_id", "mean_run", "mean_other", "difference",
                    "mean_abs_difference"]
    summary = (pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=summary_columns[1:]))
    cell = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(columns=cell_columns[1:])
    store.replace_analysis(con, run_id, {"method_agreement": summary.assign(run_id=run_id)[summary_columns],
                                         "method_disagreement": cell.assign(run_id=run_id)[cell_columns]})
    return summary
