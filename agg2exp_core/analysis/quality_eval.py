"""How good the expected Dice is where the truth is known: ranking, error, flags, coverage, and
risk-coverage (Geifman & El-Yaniv 2017; Jaeger et al. 2023; Zenk et al., MedIA 2025).

Risk-coverage: the (case, class) cells are sorted by a confidence (expected Dice, high first);
at coverage ``k / n`` the risk is the mean loss ``1 - Dice`` of the ``k`` most confident cells;
AURC is the mean of the risk over ``k = 1..n``. Two analytic baselines: the oracle (cells sorted by
their true Dice, the smallest AURC any ranking reaches) and a random ranking, whose expected risk
is the mean loss at every coverage (so its expected AURC is the mean loss). Written by hand: it
is a sort and a cumulative mean; scikit-learn has no selective-prediction metric.

``repeated_kfold`` is the honest check on a cohort without a separate reference (the published
TSV2 cases): K-fold by case, repeated, against a constant baseline (the training folds' class
means); with folds, the pooled predictions of any shrinking regressor are anti-correlated with the
held-out values (fold means move against the held-out cases), so the baseline's Spearman is
reported beside the model's.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from agg2exp_core.analysis.quality_features import QualityInputs
from agg2exp_core.analysis.quality_model import Estimates, fit_model

MIN_CLASS_CASES = 10     # a class's coverage counts for the worst-class figure from this many cases


def risk_curve(confidence: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Risk at coverage ``k / n`` for ``k = 1..n``: the mean loss of the ``k`` most confident cells
    (ties broken by order of appearance)."""
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    return np.cumsum(np.asarray(loss, dtype=float)[order]) / np.arange(1, len(order) + 1)


def aurc(confidence: np.ndarray, loss: np.ndarray) -> float:
    """Area under the risk-coverage curve (mean risk over the n coverages)."""
    return float(risk_curve(confidence, loss).mean()) if len(loss) else float("nan")


def oracle_aurc(loss: np.ndarray) -> float:
    """The smallest AURC of any ranking: cells sorted by their true loss."""
    return aurc(-np.asarray(loss, dtype=float), loss)


def failure_auroc(estimate: np.ndarray, dice: np.ndarray, threshold: float) -> float:
    """AUROC of ``-estimate`` for ``Dice < threshold`` (NaN without both outcomes)."""
    failed = dice < threshold
    if failed.all() or not failed.any():
        return float("nan")
    return float(roc_auc_score(failed, -estimate))


def class_coverage(inside: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per class: the share of its known cells inside their interval (NaN below MIN_CLASS_CASES)."""
    counts = known.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (inside & known).sum(axis=0) / counts
    return np.where(counts >= MIN_CLASS_CASES, share, np.nan)


def validation_metrics(inputs: QualityInputs, result: Estimates, cases: np.ndarray) -> dict[str, float]:
    """Spearman, MAE, AUROC, AURC and interval coverage on ``cases``; empty when unlabelled."""
    dice = inputs.dice[cases]
    known = np.isfinite(dice)
    if cases.sum() < 3 or not known.any():
        return {}
    with np.errstate(invalid="ignore"):
        true_mean = np.nanmean(dice, axis=1)
    estimate = result.estimate[cases]
    inside = (dice >= result.low[cases]) & (dice <= result.high[cases])
    case_inside = (true_mean >= result.case_low[cases]) & (true_mean <= result.case_high[cases])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # a class whose estimates are all equal: NaN, left out of the mean
        within = [stats.spearmanr(estimate[known[:, j], j], dice[known[:, j], j])[0]
                  for j in range(dice.shape[1]) if known[:, j].sum() >= 3 and np.ptp(dice[known[:, j], j]) > 0]
    threshold = float(result.failure_below[0])
    flagged, bad = (estimate < threshold) & known, (dice < threshold) & known
    per_class = class_coverage(inside, known)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")        # Spearman of the constant model's estimates is undefined: NaN
        return {"spearman_case_mean": float(stats.spearmanr(result.case_estimate[cases], true_mean)[0]),
                "spearman_class_pooled": float(stats.spearmanr(estimate[known], dice[known])[0]),
                "spearman_within_class": float(np.nanmean(within)) if within else float("nan"),
                "coverage_class": float(inside[known].mean()), "coverage_case": float(case_inside.mean()),
                "coverage_worst_class": float(np.nanmin(per_class)) if np.isfinite(per_class).any() else float("nan"),
                "mae": float(np.abs(estimate - dice)[known].mean()),
                "mae_constant": float(np.abs(result.class_mean[None, :] - dice)[known].mean()),
                "auroc": failure_auroc(estimate[known], dice[known], threshold),
                "aurc": aurc(estimate[known], 1 - dice[known]), "aurc_oracle": oracle_aurc(1 - dice[known]),
                "aurc_random": float((1 - dice[known]).mean()),
                "flags": float(flagged.sum()), "failures": float(bad.sum()),
                "flag_precision": float((flagged & bad).sum() / flagged.sum()) if flagged.any() else float("nan"),
                "flag_recall": float((flagged & bad).sum() / bad.sum()) if bad.any() else float("nan")}


def per_class_coverage(inputs: QualityInputs, result: Estimates, cases: np.ndarray) -> dict[int, float]:
    dice = inputs.dice[cases]
    known = np.isfinite(dice)
    inside = (dice >= result.low[cases]) & (dice <= result.high[cases])
    share = class_coverage(inside, known)
    return {int(c): float(v) for c, v in zip(inputs.class_ids, share)}


def curves(inputs: QualityInputs, rankings: dict[str, np.ndarray], cases: np.ndarray) -> pd.DataFrame:
    """Risk-coverage points ``ranking, position, coverage, risk`` of every ranking (``[cases, classes]``
    confidences) on ``cases``, with the oracle and the random ranking's expectation."""
    dice = inputs.dice[cases]
    known = np.isfinite(dice)
    loss = 1 - dice[known]
    if not len(loss):
        return pd.DataFrame(columns=["ranking", "position", "coverage", "risk"])
    frames = {name: risk_curve(values[cases][known], loss) for name, values in rankings.items()}
    frames["oracle"] = risk_curve(-loss, loss)
    frames["random"] = np.full(len(loss), loss.mean())
    position = np.arange(1, len(loss) + 1)
    return pd.concat([pd.DataFrame({"ranking": name, "position": position, "coverage": position / len(loss),
                                    "risk": risk}) for name, risk in frames.items()], ignore_index=True)


def repeated_kfold(inputs: QualityInputs, folds: int = 5, repeats: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per repeat: Spearman and MAE of the model and of the constant baseline, K-fold by case."""
    x, dice = inputs.features, inputs.dice
    rows = []
    with np.errstate(invalid="ignore"):
        true_mean = np.nanmean(dice, axis=1)
    for repeat in range(repeats):
        order = np.random.default_rng(seed + repeat).permutation(len(x))
        model, baseline = np.full(dice.shape, np.nan), np.full(dice.shape, np.nan)
        for test in np.array_split(order, folds):
            train = np.setdiff1d(order, test)
            model[test] = fit_model(x[train], dice[train], folds, seed).predict(x[test])
            baseline[test] = np.nanmean(dice[train], axis=0)
        known = np.isfinite(dice)
        rows.append({"repeat": repeat,
                     "spearman_model": stats.spearmanr(model.mean(axis=1), true_mean)[0],
                     "spearman_baseline": stats.spearmanr(baseline.mean(axis=1), true_mean)[0],
                     "spearman_class_model": stats.spearmanr(model[known], dice[known])[0],
                     "spearman_class_baseline": stats.spearmanr(baseline[known], dice[known])[0],
                     "mae_model": float(np.abs(model - dice)[known].mean()),
                     "mae_baseline": float(np.abs(baseline - dice)[known].mean())})
    return pd.DataFrame(rows)
