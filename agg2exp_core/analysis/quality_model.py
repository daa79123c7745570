"""The quality model: expected Dice per case and class from label-free features, its per-class
conformal intervals and its per-feature contributions.

Estimator: scikit-learn's ``Ridge`` of ``Dice - class mean`` on the standardised features (one
row per case and class, ``alpha`` by case-grouped cross-validation). Why a linear model and not
boosting or a forest: the demo fits on 8 labelled reference cases (128 rows, cases correlated
within) and a user's reference set is often as small; shrinkage toward the class means is the
safe failure mode there, and the linear terms ``coef_j * z_j`` are the exact per-feature
contributions of an estimate (linear SHAP with standardised, centred features), so a flagged
case's explanation needs no approximation.

The model's own training cases (split ``train``) are left out of the fit when enough others
remain: a segmentation model's Dice on the cases it learnt from is optimistic. Intervals are CV+
per class (Mondrian, ``analysis.conformal``: each class and the case mean on their own
residuals), residuals scaled by the class row's novelty, at ``level``. A class counts only the
calibration cases where it is labelled; when ``ceil((n + 1) level) > n`` for its n cases the
interval is unbounded: all of [0, 1]. Fitted cases get
out-of-fold estimates and nested CV+ intervals (their fold held out of everything), so their
coverage is out-of-sample too. Nothing is guaranteed on a shifted dataset (the validation reports
coverage there).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold

from agg2exp_core.analysis import conformal
from agg2exp_core.analysis.conformal import fold_indices
from agg2exp_core.analysis.quality_features import QualityInputs, reference_mask

ALPHAS = tuple(np.logspace(-1, 3, 9))   # 9 not 13: the ablation fits every set 31 times (nested CV+)


@dataclass
class DiceModel:
    """Ridge of ``Dice - class mean`` on standardised features (no features: the class means)."""

    class_mean: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    ridge: Ridge | None

    def standardised(self, features: np.ndarray) -> np.ndarray:
        return (features - self.centre) / self.scale

    def terms(self, features: np.ndarray) -> np.ndarray:
        """``[cases, classes, features]`` linear terms (Dice units) of each feature."""
        if self.ridge is None:
            return np.zeros(features.shape)
        return self.standardised(features) * self.ridge.coef_

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``[cases, classes]`` estimates from ``[cases, classes, features]``, within [0, 1]."""
        offset = self.ridge.intercept_ if self.ridge is not None else 0.0
        return np.clip(self.terms(features).sum(axis=-1) + offset + self.class_mean, 0.0, 1.0)


def fit_model(features: np.ndarray, dice: np.ndarray, folds: int, seed: int) -> DiceModel:
    """Fit on cases ``[n, classes, features]`` with Dice ``[n, classes]``; alpha by case-grouped CV."""
    with np.errstate(invalid="ignore"):
        class_mean = np.nan_to_num(np.nanmean(dice, axis=0), nan=float(np.nanmean(dice)))
    n_features = features.shape[-1]
    flat = features.reshape(features.shape[0] * features.shape[1], n_features)
    centre, scale = flat.mean(axis=0), flat.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    if not n_features:
        return DiceModel(class_mean, centre, scale, None)
    z = ((features - centre) / scale).reshape(len(flat), n_features)
    target = (dice - class_mean).ravel()
    groups = np.repeat(np.arange(len(features)), features.shape[1])
    known = np.isfinite(target)
    alpha = _choose_alpha(z[known], target[known], groups[known], folds)
    return DiceModel(class_mean, centre, scale, Ridge(alpha=alpha).fit(z[known], target[known]))


def _choose_alpha(z: np.ndarray, target: np.ndarray, groups: np.ndarray, folds: int) -> float:
    n_groups = len(np.unique(groups))
    if n_groups < 3:
        return float(ALPHAS[-1])
    splitter = GroupKFold(n_splits=min(folds, n_groups))
    errors = []
    for alpha in ALPHAS:
        error = 0.0
        for train, test in splitter.split(z, target, groups):
            error += float(np.abs(Ridge(alpha=alpha).fit(z[train], target[train]).predict(z[test]) - target[test]).sum())
        errors.append(error)
    return float(ALPHAS[int(np.argmin(errors))])


def out_of_fold(features: np.ndarray, dice: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Estimates ``[n, classes]`` of each case by a model fitted on the other folds (cases shuffled)."""
    fold = fold_indices(len(features), folds, seed)
    estimate = np.full(dice.shape, np.nan)
    for k in np.unique(fold):
        estimate[fold == k] = fit_model(features[fold != k], dice[fold != k], folds, seed).predict(features[fold == k])
    return estimate


def with_mean(values: np.ndarray) -> np.ndarray:
    """``[..., classes]`` -> ``[..., classes + 1]``: the case mean as one more column."""
    with np.errstate(invalid="ignore"):
        return np.concatenate([values, np.nanmean(values, axis=-1, keepdims=True)], axis=-1)


def cv_plus(x_cal, dice_cal, scale_cal, x_test, scale_test, config):
    """Per-class CV+ of the Dice model (``conformal.cv_plus``; the last column is the case mean)."""
    return conformal.cv_plus(lambda x, y: fit_model(x, y, config.folds, config.seed), x_cal, dice_cal, scale_cal,
                             x_test, scale_test, config.level, config.folds, config.seed, with_mean)


@dataclass
class Estimates:
    estimate: np.ndarray       # [cases, classes]
    low: np.ndarray
    high: np.ndarray
    case_estimate: np.ndarray  # [cases]: mean over classes
    case_low: np.ndarray
    case_high: np.ndarray
    failure_below: np.ndarray  # [classes + 1]: the flag's threshold per class, then for the mean
    fitted: np.ndarray         # [cases]: estimate is out-of-fold (the case was in the fit set)
    class_mean: np.ndarray     # [classes]: the fit cases' mean Dice (the constant baseline)
    model: DiceModel | None = None   # fitted on every fit case (the contributions' model)


def estimate_dice(inputs: QualityInputs, fit: np.ndarray, config) -> Estimates:
    """Estimates and per-class CV+ intervals for every case; fit cases get out-of-fold estimates
    and nested intervals (their own fold left out of the fit and the calibration)."""
    x, dice = inputs.features, inputs.dice
    scale = interval_scale(inputs.novelty, fit)
    scale = np.concatenate([scale, scale.mean(axis=1, keepdims=True)], axis=1)       # the case mean's last
    model = fit_model(x[fit], dice[fit], config.folds, config.seed)
    estimate = model.predict(x)
    low, high = np.zeros(scale.shape), np.ones(scale.shape)
    members, others = np.flatnonzero(fit), np.flatnonzero(~fit)
    oof, low[others], high[others] = cv_plus(x[members], dice[members], scale[members], x[others], scale[others],
                                             config)
    estimate[members] = oof
    outer = fold_indices(len(members), config.folds, config.seed + 1)
    for k in np.unique(outer):
        cal, held = members[outer != k], members[outer == k]
        if len(cal) >= 2:
            _, low[held], high[held] = cv_plus(x[cal], dice[cal], scale[cal], x[held], scale[held], config)
    points = with_mean(estimate)   # an interval contains its estimate; an unbounded side ends at 0 or 1
    low, high = np.clip(np.minimum(low, points), 0, 1), np.clip(np.maximum(high, points), 0, 1)
    failure = np.full(len(inputs.class_ids) + 1, failure_threshold(dice[fit], config))
    return Estimates(estimate, low[:, :-1], high[:, :-1], points[:, -1], low[:, -1], high[:, -1], failure,
                     fit.copy(), np.nanmean(dice[fit], axis=0), model)


def failure_threshold(dice_fit: np.ndarray, config) -> float:
    """The user's ``failure_below``; None: the fit cases' ``failure_quantile`` of Dice (all classes)."""
    if config.failure_below is not None:
        return float(config.failure_below)
    return float(np.nanquantile(dice_fit, config.failure_quantile))


def interval_scale(novelty: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Relative novelty of each class row (1 = a typical fit case's), at least 1."""
    typical = np.median(novelty[fit], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = novelty / np.where(typical > 0, typical, 1.0)
    return np.maximum(1.0, np.nan_to_num(relative, nan=1.0))


def fit_cases(inputs: QualityInputs, config) -> np.ndarray:
    """Labelled reference cases that fit the model (the model's training split left out if possible)."""
    labelled = np.isfinite(inputs.dice).any(axis=1)     # a class unlabelled here: calibrated on its known cases
    fit = labelled & reference_mask(inputs.datasets, config.fit_dataset)
    if config.exclude_split:
        held_out = fit & (inputs.splits != config.exclude_split)
        if held_out.sum() >= config.min_cases:
            fit = held_out
    return fit
