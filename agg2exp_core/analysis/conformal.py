"""Conformal prediction intervals: split-conformal quantiles and per-column (Mondrian) CV+.

Written here rather than taken from a library: MAPIE (the maintained scikit-learn-style package)
is not among the project's requirements, and its CV+ has no per-class (Mondrian) calibration of a
multi-output model with a per-case residual scale, which the Dice estimate needs. The formulas
are those of Barber, Candès, Ramdas & Tibshirani (2021), "Predictive inference with the
jackknife+", Ann. Statist. 49:486-507, Section 3 (CV+), applied column by column:

    low(x)  = the floor(alpha (n + 1))-th smallest of  mu_{-k(i)}(x) - R_i scale(x),
    high(x) = the ceil((1 - alpha)(n + 1))-th smallest of  mu_{-k(i)}(x) + R_i scale(x),

over the calibration cases i, with ``R_i = |y_i - mu_{-k(i)}(x_i)| / scale(x_i)`` and
``mu_{-k}`` the model fitted without fold k. Guaranteed coverage is at least 1 - 2 alpha for
a case exchangeable with the calibration cases (about 1 - alpha in practice); nothing is
guaranteed for a case from a shifted distribution.
"""
from __future__ import annotations

import numpy as np


def fold_indices(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each of ``n`` cases (cases shuffled, ``min(folds, n)`` near-equal folds)."""
    fold = np.empty(n, dtype=int)
    for k, members in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), min(folds, n))):
        fold[members] = k
    return fold


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Split-conformal quantile of nonconformity scores (finite-sample corrected): the
    ``ceil((n + 1) level)``-th smallest, infinite when that rank exceeds ``n``."""
    scores = np.sort(np.asarray(scores, dtype=float)[np.isfinite(scores)])
    if not len(scores):
        return float("nan")
    rank = _upper_rank(len(scores), level)
    return float(scores[rank - 1]) if rank <= len(scores) else float("inf")


def _upper_rank(n: int, level: float) -> int:
    return int(np.ceil((n + 1) * level - 1e-9))


def cv_plus(fit, x_cal, y_cal, scale_cal, x_test, scale_test, level: float, folds: int, seed: int,
            columns=lambda values: values):
    """Per-column (Mondrian) CV+ bounds for ``x_test`` from the calibration cases.

    ``fit(x, y)`` returns a model with ``predict(x) -> [cases, outputs]``; ``columns`` maps
    outputs (and targets) to the columns that get intervals (e.g. adds a case mean). Returns
    (out-of-fold predictions of the calibration cases, low, high ``[test, columns]``); a side
    without a finite quantile (``ceil((n + 1) level) > n``) is infinite. ``scale_*``: the
    residual scale of each case and column.
    """
    fold = fold_indices(len(x_cal), folds, seed)
    models = [fit(x_cal[fold != k], y_cal[fold != k]) for k in np.unique(fold)]
    oof = np.full(y_cal.shape, np.nan)
    for k, model in enumerate(models):
        oof[fold == k] = model.predict(x_cal[fold == k])
    residual = np.abs(columns(y_cal) - columns(oof)) / scale_cal                    # [n, columns]
    if not len(x_test):
        empty = np.empty((0, residual.shape[1]))
        return oof, empty, empty.copy()
    predictions = np.stack([columns(model.predict(x_test)) for model in models])    # [folds, test, columns]
    low, high = np.empty(predictions.shape[1:]), np.empty(predictions.shape[1:])
    # each column's own calibration count: a class unlabelled in some calibration cases ranks among its known ones
    counts = np.isfinite(residual).sum(axis=0)                                        # [columns]
    k_high = np.array([_upper_rank(int(n), level) for n in counts])
    k_low = np.floor((1 - level) * (counts + 1) + 1e-9).astype(int)
    chunk = max(1, 2_000_000 // max(len(x_cal) * predictions.shape[2], 1))            # bounded memory
    for start in range(0, predictions.shape[1], chunk):
        rows = slice(start, start + chunk)
        centre = predictions[fold, rows]                                                # [n, chunk, columns]
        spread = residual[:, None, :] * scale_test[None, rows]
        low[rows] = _kth_smallest(centre - spread, k_low, counts, -np.inf)
        high[rows] = _kth_smallest(centre + spread, k_high, counts, np.inf)
    return oof, low, high


def _kth_smallest(values: np.ndarray, k: np.ndarray, counts: np.ndarray, outside: float) -> np.ndarray:
    """Per column the ``k``-th smallest finite value of ``values [n, rows, columns]`` (NaN: unknown,
    sorted last); ``outside`` where ``k`` lies outside 1..count (no finite quantile)."""
    ordered = np.sort(np.where(np.isnan(values), np.inf, values), axis=0)
    index = np.clip(k - 1, 0, len(values) - 1)
    picked = np.take_along_axis(ordered, np.broadcast_to(index, values.shape[1:])[None], axis=0)[0]
    return np.where((k >= 1) & (k <= counts), picked, outside)
