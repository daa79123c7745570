"""Uncertainty of cohort numbers: bootstrap confidence intervals over patients.

Every global-matrix cell is a mean over the cohort's patients, every context mass too,
and a cohort comparison is a difference of two such means. Resampling patients (with
replacement, the nonparametric bootstrap) gives each its interval. One set of resamples
serves every cell (a resample is a weight vector over patients, so all cells' sums and sums
of squares are one matrix product); missing values (a class absent from a case) are left out
of each cell's mean, per resample. Deterministic for a given ``seed``.

The interval is the studentised bootstrap ("bootstrap-t", Efron & Tibshirani 1993 ch. 12;
Hall 1988): the quantiles of ``t* = (mean* - mean) / se*`` over resamples, applied as
``mean - t*_(1-tail) se, mean - t*_(tail) se``. Masses are skewed (most cells near 0, a few
cases high) and the percentile interval under-covers there: measured on 2,000 lognormal(0, 1)
cells, nominal 95 %, the percentile interval covered 77 % at n = 8 and 87 % at n = 32, a BCa
prototype 81 % / 88 %, the studentised one 89 % / 92 % (Beta(0.3, 3): 79 / 93 % against 94 / 96 %;
``benchmarks/statistics_calibration.py``). ``method="percentile"``
keeps the old interval for comparison. Intervals are pointwise (each cell's on its own, not
simultaneous over cells), and below ``MIN_RELIABLE_N`` = 20 patients they still under-cover
for strongly skewed cells: the dashboard says both.

``analyze_uncertainty`` stores the intervals of a run for all its cases and for each
dataset (table ``bootstrap_ci``; cohort ``*`` = all cases), for the absolute, positive
and negative masses that the run has and for the context mass ``1 - e_{a->a}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from agg2exp_core import store
from agg2exp_core.vocabulary import ALL_CASES, MASS_KINDS

BATCH = 250
METHODS = ("studentized", "percentile")
MIN_RELIABLE_N = 20     # below this many patients a caption warns that intervals may under-cover


@dataclass(frozen=True)
class BootstrapConfig:
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0
    method: str = "studentized"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.n_boot < 10:
            raise ValueError(f"n_boot must be at least 10, got {self.n_boot}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must lie in (0, 1), got {self.level}")


@dataclass(frozen=True)
class Interval:
    """Estimate and bootstrap interval per cell (arrays of the cell shape); ``n``: observations."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray
    n_boot: int
    level: float
    method: str = "studentized"


def resample_weights(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``[size, n]`` counts of each patient in ``size`` bootstrap resamples of ``n`` patients."""
    draws = rng.integers(0, n, size=(size, n)) + (np.arange(size)[:, None] * n)
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float32)


def _resampled_means(values: np.ndarray, config: BootstrapConfig, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, cells]`` bootstrap means of ``values`` ``[n, cells]`` (NaN-aware)."""
    return _resampled_moments(values, config, rng)[0]


def _resampled_moments(values: np.ndarray, config: BootstrapConfig, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``[n_boot, cells]`` bootstrap means of ``values`` ``[n, cells]`` and the standard errors of
    those means (NaN-aware; NaN where a resample has fewer than two observations of a cell).

    A batch of resamples is one float32 product ``counts @ [values, squares]``; the values are
    centred per cell first (keeps the sums of squares free of cancellation). Without missing
    values every cell's count is the resample's size ``n`` (exact in float32), so the count
    product is skipped.
    """
    present = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where(present, values, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    filled = np.where(present, values - centre, 0.0)
    both = np.concatenate([filled, filled * filled], axis=1).astype(np.float32)
    counts = None if present.all() else present.astype(np.float32)
    width = values.shape[1]
    means, errors = np.empty((config.n_boot, width)), np.empty((config.n_boot, width))
    for start in range(0, config.n_boot, BATCH):
        weights = resample_weights(len(values), min(BATCH, config.n_boot - start), rng)
        sums = (weights @ both).astype(float)
        n = np.float64(len(values)) if counts is None else (weights @ counts).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums[:, :width] / n
            variance = np.maximum(sums[:, width:] - sums[:, :width] * mean, 0.0) / (n - 1)
            rows = slice(start, start + len(weights))
            means[rows], errors[rows] = mean + centre, np.sqrt(variance / n)
    return means, errors


def _percentiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(samples)
        low = np.full(samples.shape[1], np.nan)
        high = np.full(samples.shape[1], np.nan)
        enough = finite.sum(axis=0) >= max(10, int(0.5 * len(samples)))
        if enough.any():
            low[enough] = np.nanquantile(samples[:, enough], tail, axis=0)
            high[enough] = np.nanquantile(samples[:, enough], 1.0 - tail, axis=0)
    return low, high


def _studentized(estimate: np.ndarray, error: np.ndarray, means: np.ndarray, errors: np.ndarray,
                 level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap-t bounds: ``estimate - q_high * error``, ``estimate - q_low * error`` where q are the
    quantiles of ``(means - estimate) / errors`` over resamples. A cell with no spread (every patient
    alike) gets the point interval; a resample with no spread gives no t (left out)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(errors > 0, (means - estimate) / errors, np.nan)
    q_low, q_high = _percentiles(t, level)
    low, high = estimate - q_high * error, estimate - q_low * error
    # Too few resamples with a spread (e.g. one value repeated up to rounding): the percentile bounds.
    degenerate = ~np.isfinite(low) & np.isfinite(estimate)
    if degenerate.any():
        low[degenerate], high[degenerate] = (b[degenerate] for b in _percentiles(means, level))
    # No spread at all, up to float noise (the squares of centred float32 values underflow): the point.
    flat = error <= 1e-9 * np.maximum(1.0, np.abs(estimate))
    low[flat], high[flat] = estimate[flat], estimate[flat]
    return low, high


def _standard_error(values: np.ndarray) -> np.ndarray:
    """Per-column standard error of the mean, NaN-aware (NaN below two observations)."""
    present = np.isfinite(values)
    n = present.sum(axis=0)
    mean = _nan_mean(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        squares = np.where(present, values - mean, 0.0) ** 2
        return np.sqrt(squares.sum(axis=0) / (n - 1) / n)


def bootstrap_mean(values: np.ndarray, config: BootstrapConfig = BootstrapConfig()) -> Interval:
    """Mean over patients (axis 0) of ``values`` ``[n, *cells]`` with its bootstrap interval."""
    values = np.asarray(values, dtype=float)
    shape = values.shape[1:]
    flat = values.reshape(len(values), -1)
    n = np.isfinite(flat).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = np.where(n > 0, np.nansum(flat, axis=0) / np.maximum(n, 1), np.nan)
    if len(values) < 2:
        nan = np.full(flat.shape[1], np.nan)
        return Interval(estimate.reshape(shape), nan.reshape(shape), nan.reshape(shape), n.reshape(shape),
                        config.n_boot, config.level, config.method)
    means, errors = _resampled_moments(flat, config, np.random.default_rng(config.seed))
    if config.method == "percentile":
        low, high = _percentiles(means, config.level)
    else:
        with np.errstate(invalid="ignore"):
            low, high = _studentized(estimate, _standard_error(flat), means, errors, config.level)
    low[n < 2], high[n < 2] = np.nan, np.nan
    return Interval(estimate.reshape(shape), low.reshape(shape), high.reshape(shape), n.reshape(shape),
                    config.n_boot, config.level, config.method)


def _nan_mean(values: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN (NaN for a column without values), without warnings."""
    present = np.isfinite(values)
    n = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(present, values, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def bootstrap_difference(a: np.ndarray, b: np.ndarray, config: BootstrapConfig = BootstrapConfig()) -> Interval:
    """mean(a) - mean(b) per cell, each cohort resampled on its own (``a``: ``[n_a, *cells]``).

    Studentised by the Welch standard error ``sqrt(se_a^2 + se_b^2)`` of each resample."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"cohorts have different cell shapes: {a.shape[1:]} vs {b.shape[1:]}")
    shape = a.shape[1:]
    fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
    rng = np.random.default_rng(config.seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = _nan_mean(fa) - _nan_mean(fb)
        (means_a, errors_a), (means_b, errors_b) = (_resampled_moments(f, config, rng) for f in (fa, fb))
        if config.method == "percentile":
            low, high = _percentiles(means_a - means_b, config.level)
        else:
            error = np.sqrt(_standard_error(fa) ** 2 + _standard_error(fb) ** 2)
            low, high = _studentized(estimate, error, means_a - means_b, np.sqrt(errors_a ** 2 + errors_b ** 2),
                                     config.level)
    n = np.minimum(np.isfinite(fa).sum(axis=0), np.isfinite(fb).sum(axis=0))
    low[n < 2], high[n < 2] = np.nan, np.nan
    return Interval(np.asarray(estimate).reshape(shape), low.reshape(shape), high.reshape(shape), n.reshape(shape),
                    config.n_boot, config.level, config.method)


def context_values(cube: np.ndarray, targets: list[int], sources: list[int]) -> tuple[list[int], np.ndarray]:
    """(targets with a self cell, ``[cases, those targets]`` context masses ``1 - e_{a->a}``)."""
    column = {s: j for j, s in enumerate(sources)}
    kept = [(i, t) for i, t in enumerate(targets) if t in column]
    values = np.stack([1.0 - cube[:, i, column[t]] for i, t in kept], axis=1) if kept else np.zeros((len(cube), 0))
    return [t for _, t in kept], values


def interval_frame(interval: Interval, target_ids, source_ids, kind: str, cohort: str) -> pd.DataFrame:
    """Long rows ``cohort, kind, target_id, source_id, estimate, low, high, n, n_boot, level``."""
    t_index, s_index = np.meshgrid(np.arange(len(target_ids)), np.arange(len(source_ids)), indexing="ij")
    frame = pd.DataFrame({"cohort": cohort, "kind": kind, "target_id": np.asarray(target_ids)[t_index.ravel()],
                          "source_id": np.asarray(source_ids)[s_index.ravel()],
                          "estimate": interval.estimate.ravel(), "low": interval.low.ravel(),
                          "high": interval.high.ravel(), "n": interval.n.ravel().astype(int),
                          "n_boot": interval.n_boot, "level": interval.level})
    return frame[frame.n > 0]


def context_frame(interval: Interval, target_ids: list[int], cohort: str) -> pd.DataFrame:
    """Context-mass rows (``source_id`` = ``target_id``: the self cell they come from)."""
    frame = pd.DataFrame({"cohort": cohort, "kind": "context", "target_id": target_ids, "source_id": target_ids,
                          "estimate": interval.estimate, "low": interval.low, "high": interval.high,
                          "n": interval.n.astype(int), "n_boot": interval.n_boot, "level": interval.level})
    return frame[frame.n > 0]


def analyze_uncertainty(con, run_id: str, config: BootstrapConfig = BootstrapConfig()) -> pd.DataFrame:
    """Bootstrap intervals of the run's global matrices and context masses, all cases and per dataset."""
    frames = []
    for kind in MASS_KINDS:
        case_ids, targets, sources, cube = store.local_matrices(con, run_id, kind)
        if not case_ids or not np.isfinite(cube).any():
            continue
        datasets = store.case_metadata(con, case_ids).dataset.astype(str).to_numpy()
        cohorts = [(ALL_CASES, np.ones(len(case_ids), dtype=bool))]
        if len(set(datasets)) > 1:
            cohorts += [(d, datasets == d) for d in sorted(set(datasets))]
        for cohort, members in cohorts:
            frames.append(interval_frame(bootstrap_mean(cube[members], config), targets, sources, kind, cohort))
            if kind == "abs":
                context_targets, values = context_values(cube[members], targets, sources)
                frames.append(context_frame(bootstrap_mean(values, config), context_targets, cohort))
    columns = ["cohort", "kind", "target_id", "source_id", "estimate", "low", "high", "n", "n_boot", "level"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    store.replace_analysis(con, run_id, {"bootstrap_ci": table.assign(run_id=run_id)[["run_id", *columns]]})
    return table
