"""Label-free segmentation QA: the Dice a model reached on a case, estimated without ground truth.

Features of a case and class, all computable without labels:
- novelty of the explanation: L1 distance of the class row ``E_x[a, :]`` to the reference cases' median
  row, its mean over classes, and the mean L1 distance of the whole matrix to its ``k`` nearest
  reference cases (reference cases are measured leave-one-out);
- the run's Isolation-Forest anomaly scores (per class and averaged), when analysed;
- the prediction (from the slice artefacts, when the run has them): connected components of the predicted
  label map (fragmentation) and the mean absolute log-ratio of predicted class volumes to the reference median.

A ridge regression (``alpha`` by case-grouped cross-validation) of ``Dice - class mean`` on
the standardised features is fitted on labelled reference cases. The model's own training
cases (split ``train``) are left out of the fit when enough others remain: a segmentation
model's Dice on the cases it learnt from is optimistic. Intervals are CV+ per class (Mondrian,
``analysis.conformal``: each class and the case mean on its own residuals; one pooled quantile
covered 1.00 / 0.95 / 0.46 of classes with residual SDs 0.01 / 0.04 / 0.12 at 0.80), residuals
scaled by the class row's novelty, at ``level`` (80 %). When ``ceil((n + 1) level) > n`` the
interval is unbounded: all of [0, 1]. Fitted cases get out-of-fold estimates and nested CV+
intervals (their fold held out of everything), so their coverage is out-of-sample too. Nothing
is guaranteed on a shifted dataset (the validation reports coverage there). A class is flagged a likely failure when its estimate lies below the fit
cases' 10th percentile of that class's Dice (estimates are shrunk toward the class mean,
so this flags few cases; the validation reports how many flags were right).

``repeated_kfold`` is the honest check on a cohort without a separate reference (the
published TSV2 cases): K-fold by case, repeated, against a constant baseline (the training
folds' class means); with folds, the pooled predictions of any shrinking regressor are
anti-correlated with the held-out values (fold means move against the held-out cases), so
the baseline's Spearman is reported beside the model's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, stats
from scipy.spatial.distance import cdist
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold

from agg2exp_core import store
from agg2exp_core.analysis import conformal
from agg2exp_core.analysis.conformal import conformal_quantile, fold_indices  # noqa: F401 (re-exported)
from agg2exp_core.analysis.masses import RAW_KIND, comparison_cube
from agg2exp_core.vocabulary import AVERAGE_TARGET

ALPHAS = tuple(np.logspace(-1, 3, 13))


@dataclass(frozen=True)
class QualityConfig:
    fit_dataset: str | None = None       # labelled reference cases of this dataset (None: every labelled case)
    exclude_split: str | None = "train"  # left out of the fit when at least min_cases others remain
    level: float = 0.8
    k_neighbours: int = 3
    folds: int = 5
    failure_quantile: float = 0.1
    min_cases: int = 5
    max_reference: int = 500             # reference cases of the novelty features (subsampled beyond)
    seed: int = 0
    # Raw mass, not the lift: on the demo's external cases the lift's unbounded row distances cut
    # Spearman(expected, true Dice) from 0.74 to 0.47 (VG) / 0.57 (SmoothGrad); volume is evidence here.
    kind: str = RAW_KIND


@dataclass
class QualityInputs:
    """Everything the estimate needs, ``[cases, classes, features]`` and the true Dice (NaN unknown)."""

    case_ids: list[str]
    class_ids: list[int]
    features: np.ndarray
    names: list[str]
    dice: np.ndarray
    novelty: np.ndarray          # [cases, classes]: the interval scale's raw value
    datasets: np.ndarray
    splits: np.ndarray


# --- features -------------------------------------------------------------------------------

def prediction_features(pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(voxel count, connected components) of every class of a predicted label map."""
    volumes = np.bincount(np.asarray(pred).ravel().astype(np.int64), minlength=n_classes)[:n_classes]
    components = np.array([ndimage.label(pred == c)[1] if volumes[c] else 0 for c in range(n_classes)])
    return volumes.astype(float), components.astype(float)


def artifact_features(folder: str | Path, paths: dict[str, str], case_ids: list[str],
                      n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Volumes and components ``[cases, channels]`` from the slice artefacts (None unless every case has one)."""
    if not case_ids or any(c not in paths for c in case_ids):
        return None
    volumes, components = np.zeros((len(case_ids), n_classes)), np.zeros((len(case_ids), n_classes))
    for i, case_id in enumerate(case_ids):
        try:
            with np.load(Path(folder) / paths[case_id], allow_pickle=False) as npz:
                volumes[i], components[i] = prediction_features(npz["pred"], n_classes)
        except (OSError, KeyError, ValueError):
            return None
    return volumes, components


def novelty_features(cube: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(L1 distance of each class row to the reference median row ``[cases, classes]``,
    mean L1 distance of the whole matrix to the k nearest reference cases ``[cases]``).

    ``reference``: indices of the reference cases; they are measured leave-one-out.
    """
    rows = np.nan_to_num(cube, nan=0.0)
    flat = rows.reshape(len(rows), -1)
    reference = np.asarray(reference)
    to_median = np.abs(rows - np.median(rows[reference], axis=0)).sum(axis=2)
    for i in reference:                      # a reference case against the others only
        to_median[i] = np.abs(rows[i] - np.median(rows[reference[reference != i]], axis=0)).sum(axis=1)
    pairwise = cdist(flat, flat[reference], "cityblock")                     # [cases, reference]
    pairwise[reference, np.arange(len(reference))] = np.inf                   # not its own neighbour
    nearest = np.sort(pairwise, axis=1)[:, :k]
    return to_median, np.where(np.isfinite(nearest), nearest, np.nan).mean(axis=1)


def build_inputs(con, run_id: str, config: QualityConfig) -> QualityInputs:
    """Features of every case and class of a run, from the store (and the run's artefacts)."""
    _, case_ids, targets, sources, cube = comparison_cube(con, run_id, config.kind)
    class_ids = store.class_roi_ids(con)
    keep = [j for j, s in enumerate(sources) if s in class_ids]
    cube = cube[:, :, keep]
    meta = store.case_metadata(con, case_ids)
    datasets, splits = meta.dataset.astype(str).to_numpy(), meta.split.fillna("").astype(str).to_numpy()
    reference = _reference_mask(datasets, config)
    members = np.flatnonzero(reference)
    if len(members) > config.max_reference:
        members = np.sort(np.random.default_rng(config.seed).choice(members, config.max_reference, replace=False))
    to_median, neighbours = novelty_features(cube, members, config.k_neighbours)
    columns = {"row_distance": to_median, "mean_row_distance": _per_case(to_median.mean(axis=1), targets),
               "nearest_reference": _per_case(neighbours, targets)}
    columns.update(_anomaly_columns(con, run_id, case_ids, targets))
    columns.update(_prediction_columns(con, run_id, case_ids, targets, reference))
    dice = np.full((len(case_ids), len(targets)), np.nan)
    frame = store.dice_of_model(con, store.run_model(con, run_id))
    index, t_index = {c: i for i, c in enumerate(case_ids)}, {t: j for j, t in enumerate(targets)}
    for case_id, target, value in zip(frame.case_id, frame.target_id, frame.dice):
        if case_id in index and int(target) in t_index:
            dice[index[case_id], t_index[int(target)]] = value
    names = list(columns)
    return QualityInputs(case_ids, list(targets), np.stack([columns[n] for n in names], axis=-1), names, dice,
                         to_median, datasets, splits)


def _reference_mask(datasets: np.ndarray, config: QualityConfig) -> np.ndarray:
    if config.fit_dataset is None:
        return np.ones(len(datasets), dtype=bool)
    return datasets == config.fit_dataset


def _per_case(values: np.ndarray, targets) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=float)[:, None], len(targets), axis=1)


def _anomaly_columns(con, run_id, case_ids, targets) -> dict[str, np.ndarray]:
    scores = store.anomaly_scores(con, run_id)
    if scores.empty:
        return {}
    wide = scores.pivot_table(index="case_id", columns="target_id", values="score").reindex(case_ids)
    if AVERAGE_TARGET not in wide.columns or wide[AVERAGE_TARGET].isna().any():
        return {}
    per_class = wide.reindex(columns=list(targets)).to_numpy(dtype=float)
    per_class = np.where(np.isfinite(per_class), per_class, np.nanmax(per_class))   # absent class: most anomalous
    return {"anomaly": per_class, "mean_anomaly": _per_case(wide[AVERAGE_TARGET].to_numpy(float), targets)}


def _prediction_columns(con, run_id, case_ids, targets, reference) -> dict[str, np.ndarray]:
    names = store.run_label_names(con, run_id)
    found = artifact_features(store.store_folder(con), store.artifact_paths(con, run_id), case_ids, len(names))
    if found is None:
        return {}
    volumes, components = found
    ratio = np.log((volumes + 1.0) / (np.median(volumes[reference], axis=0) + 1.0))
    return {"components": _per_case(np.log1p(components[:, 1:].sum(axis=1)), targets),
            "volume_deviation": _per_case(np.abs(ratio[:, 1:]).mean(axis=1), targets)}


# --- the model --------------------------------------------------------------------------------

@dataclass
class DiceModel:
    """Ridge of ``Dice - class mean`` on standardised features (one row per case and class)."""

    class_mean: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    ridge: Ridge

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``[cases, classes]`` estimates from ``[cases, classes, features]``, within [0, 1]."""
        z = (features - self.centre) / self.scale
        flat = self.ridge.predict(z.reshape(-1, z.shape[-1])).reshape(z.shape[:2])
        return np.clip(flat + self.class_mean, 0.0, 1.0)


def fit_model(features: np.ndarray, dice: np.ndarray, folds: int, seed: int) -> DiceModel:
    """Fit on cases ``[n, classes, features]`` with Dice ``[n, classes]``; alpha by case-grouped CV."""
    with np.errstate(invalid="ignore"):
        class_mean = np.nan_to_num(np.nanmean(dice, axis=0), nan=float(np.nanmean(dice)))
    flat = features.reshape(-1, features.shape[-1])
    centre, scale = flat.mean(axis=0), flat.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = ((features - centre) / scale).reshape(-1, features.shape[-1])
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


def _with_mean(values: np.ndarray) -> np.ndarray:
    """``[..., classes]`` -> ``[..., classes + 1]``: the case mean as one more column."""
    with np.errstate(invalid="ignore"):
        return np.concatenate([values, np.nanmean(values, axis=-1, keepdims=True)], axis=-1)


def cv_plus(x_cal, dice_cal, scale_cal, x_test, scale_test, config: "QualityConfig"):
    """Per-class CV+ of the Dice model (``conformal.cv_plus``; the last column is the case mean)."""
    return conformal.cv_plus(lambda x, y: fit_model(x, y, config.folds, config.seed), x_cal, dice_cal, scale_cal,
                             x_test, scale_test, config.level, config.folds, config.seed, _with_mean)


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


def estimate_dice(inputs: QualityInputs, fit: np.ndarray, config: QualityConfig) -> Estimates:
    """Estimates and per-class CV+ intervals for every case; fit cases get out-of-fold estimates
    and nested intervals (their own fold left out of the fit and the calibration)."""
    x, dice = inputs.features, inputs.dice
    scale = _interval_scale(inputs.novelty, fit)
    scale = np.concatenate([scale, scale.mean(axis=1, keepdims=True)], axis=1)       # the case mean's last
    estimate = fit_model(x[fit], dice[fit], config.folds, config.seed).predict(x)
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
    points = _with_mean(estimate)   # an interval contains its estimate; an unbounded side ends at 0 or 1
    low, high = np.clip(np.minimum(low, points), 0, 1), np.clip(np.maximum(high, points), 0, 1)
    with np.errstate(invalid="ignore"):
        case_true = np.nanmean(dice[fit], axis=1)
    failure = np.append(np.nanquantile(dice[fit], config.failure_quantile, axis=0),
                        np.nanquantile(case_true, config.failure_quantile))
    return Estimates(estimate, low[:, :-1], high[:, :-1], points[:, -1], low[:, -1], high[:, -1], failure,
                     fit.copy(), np.nanmean(dice[fit], axis=0))


def _interval_scale(novelty: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Relative novelty of each class row (1 = a typical fit case's), at least 1."""
    typical = np.median(novelty[fit], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = novelty / np.where(typical > 0, typical, 1.0)
    return np.maximum(1.0, np.nan_to_num(relative, nan=1.0))


def fit_cases(inputs: QualityInputs, config: QualityConfig) -> np.ndarray:
    """Labelled reference cases that fit the model (the model's training split left out if possible)."""
    labelled = np.isfinite(inputs.dice).all(axis=1)
    fit = labelled & _reference_mask(inputs.datasets, config)
    if config.exclude_split:
        held_out = fit & (inputs.splits != config.exclude_split)
        if held_out.sum() >= config.min_cases:
            fit = held_out
    return fit


# --- validation ----------------------------------------------------------------------------------

def validation_metrics(inputs: QualityInputs, result: Estimates, cases: np.ndarray) -> dict[str, float]:
    """Spearman of estimated vs true mean Dice, interval coverage (class and case), MAE; NaN when unlabelled."""
    dice = inputs.dice[cases]
    known = np.isfinite(dice)
    if cases.sum() < 3 or not known.any():
        return {}
    with np.errstate(invalid="ignore"):
        true_mean = np.nanmean(dice, axis=1)
    inside = (dice >= result.low[cases]) & (dice <= result.high[cases])
    case_inside = (true_mean >= result.case_low[cases]) & (true_mean <= result.case_high[cases])
    rho = stats.spearmanr(result.case_estimate[cases], true_mean)[0]
    pooled = stats.spearmanr(result.estimate[cases][known], dice[known])[0]
    within = [stats.spearmanr(result.estimate[cases][known[:, j], j], dice[known[:, j], j])[0]
              for j in range(dice.shape[1]) if known[:, j].sum() >= 3 and np.ptp(dice[known[:, j], j]) > 0]
    flagged = (result.estimate[cases] < result.failure_below[:-1]) & known
    bad = (dice < result.failure_below[:-1]) & known
    with np.errstate(invalid="ignore"):
        return {"spearman_case_mean": float(rho), "spearman_class_pooled": float(pooled),
                "spearman_within_class": float(np.nanmean(within)) if within else float("nan"),
                "coverage_class": float(inside[known].mean()), "coverage_case": float(case_inside.mean()),
                "mae": float(np.abs(result.estimate[cases] - dice)[known].mean()),
                "mae_constant": float(np.abs(result.class_mean[None, :] - dice)[known].mean()),
                "flags": float(flagged.sum()), "flag_precision": float((flagged & bad).sum() / flagged.sum())
                if flagged.any() else float("nan"), "flag_recall": float((flagged & bad).sum() / bad.sum())
                if bad.any() else float("nan")}


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


# --- the store -------------------------------------------------------------------------------------

def analyze_quality(con, run_id: str, config: QualityConfig = QualityConfig()) -> dict:
    """Estimate every case's Dice, validate on the labelled cases outside the fit, write both tables."""
    inputs = build_inputs(con, run_id, config)
    fit = fit_cases(inputs, config)
    if fit.sum() < config.min_cases:
        return {"run_id": run_id, "n_fit": int(fit.sum()), "skipped": "too few labelled reference cases"}
    result = estimate_dice(inputs, fit, config)
    metrics = {"fit (nested CV)": validation_metrics(inputs, result, fit)}
    for dataset in sorted(set(inputs.datasets[~fit])):
        metrics[dataset] = validation_metrics(inputs, result, ~fit & (inputs.datasets == dataset))
    write_quality(con, run_id, inputs, result, metrics, config)
    return {"run_id": run_id, "n_fit": int(fit.sum()), "features": inputs.names, "metrics": metrics,
            "estimates": result}


def write_quality(con, run_id: str, inputs: QualityInputs, result: Estimates, metrics: dict, config) -> None:
    n_cases, n_classes = result.estimate.shape
    per_class = pd.DataFrame({
        "case_id": np.repeat(inputs.case_ids, n_classes), "class_id": np.tile(inputs.class_ids, n_cases),
        "estimate": result.estimate.ravel(), "low": result.low.ravel(), "high": result.high.ravel(),
        "failure_below": np.tile(result.failure_below[:-1], n_cases), "fitted": np.repeat(result.fitted, n_classes)})
    per_case = pd.DataFrame({"case_id": inputs.case_ids, "class_id": AVERAGE_TARGET, "estimate": result.case_estimate,
                             "low": result.case_low, "high": result.case_high,
                             "failure_below": result.failure_below[-1], "fitted": result.fitted})
    table = pd.concat([per_class, per_case], ignore_index=True)
    table["likely_failure"] = table.estimate < table.failure_below
    table = table.assign(run_id=run_id, level=config.level)[
        ["run_id", "case_id", "class_id", "estimate", "low", "high", "level", "likely_failure", "failure_below",
         "fitted"]]
    quality = pd.DataFrame([{"run_id": run_id, "scope": scope, "metric": name, "value": value,
                             "n": int(((inputs.datasets == scope) & ~result.fitted).sum()) if scope in
                             set(inputs.datasets) else int(result.fitted.sum())}
                            for scope, values in metrics.items() for name, value in values.items()],
                           columns=["run_id", "scope", "metric", "value", "n"])
    store.replace_analysis(con, run_id, {"dice_estimate": table, "dice_estimate_quality": quality})
