"""Label-free segmentation QA: the Dice a model reached on a case and class, estimated without
ground truth, with per-class intervals, failure flags, an ablation of the feature groups and
risk-coverage curves against baselines.

Modules: ``quality_features`` (the uncertainty / explanation / volume features of a run),
``quality_model`` (the Ridge model, CV+ intervals, contributions), ``quality_eval`` (Spearman, MAE,
AUROC, AURC, coverage; TSV2's repeated K-fold). This module runs them on a run and writes the store.

A (case, class) is flagged a likely failure when its expected Dice lies below ``failure_below``
(the user's threshold; ``analyze --failure-below``). Every feature set of ``FEATURE_SETS`` is fitted
and validated the same way (the ablation); the estimate written to ``dice_estimate`` is
``config.feature_set``'s. Baseline rankings of the risk-coverage curves: the oracle, a random
ranking, the class means (``constant``) and the single uncertainty feature that ranks the fit
cases best (Zenk et al. 2025: agreement of augmentations is the strongest simple baseline).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from agg2exp_core import store
from agg2exp_core.analysis.conformal import conformal_quantile, fold_indices  # noqa: F401 (re-exported)
from agg2exp_core.analysis.masses import RAW_KIND
from agg2exp_core.analysis.quality_eval import (curves, per_class_coverage, repeated_kfold,  # noqa: F401
                                                validation_metrics)
from agg2exp_core.analysis.quality_features import (EXPLANATION, UNCERTAINTY, VOLUME, QualityInputs,  # noqa: F401
                                                    artifact_features, build_inputs, novelty_features,
                                                    prediction_features)
from agg2exp_core.analysis.quality_model import (DiceModel, Estimates, estimate_dice, fit_cases,  # noqa: F401
                                                 fit_model, out_of_fold)
from agg2exp_core.vocabulary import AVERAGE_TARGET

FEATURE_SETS = {"all": (UNCERTAINTY, EXPLANATION, VOLUME), "uncertainty": (UNCERTAINTY,),
                "explanation": (EXPLANATION,), "explanation+uncertainty": (EXPLANATION, UNCERTAINTY),
                "volume": (VOLUME,), "constant": ()}
FIT_SCOPE = "fit (nested CV)"


@dataclass(frozen=True)
class QualityConfig:
    fit_dataset: str | None = None       # labelled reference cases of this dataset (None: every labelled case)
    exclude_split: str | None = "train"  # left out of the fit when at least min_cases others remain
    level: float = 0.8
    k_neighbours: int = 3
    folds: int = 5
    failure_below: float | None = 0.8    # flag threshold on expected Dice (None: failure_quantile of the fit)
    failure_quantile: float = 0.1
    min_cases: int = 5
    max_reference: int = 500             # reference cases of the novelty features (subsampled beyond)
    seed: int = 0
    # Raw mass, not the lift: on the demo's external cases the lift's unbounded row distances cut
    # Spearman(expected, true Dice) from 0.74 to 0.47 (VG) / 0.57 (SmoothGrad); volume is evidence here.
    kind: str = RAW_KIND
    volume_adjust: bool = True           # explanation features less what predicted volume explains
    feature_set: str = "all"             # the set whose estimate is written to dice_estimate
    ablation: bool = True


def available_sets(inputs: QualityInputs) -> dict[str, tuple[str, ...]]:
    """``all`` and the feature sets with features in this run (a set whose groups are all empty is left
    out, except ``constant``; a set with the same features as an earlier one besides ``all`` too)."""
    present = {inputs.group_of(n) for n in inputs.names}
    found, seen = {"all": FEATURE_SETS["all"]}, set()
    for name, groups in FEATURE_SETS.items():
        have = tuple(g for g in groups if g in present)
        if name != "all" and (have or not groups) and have not in seen:
            found[name] = groups
            seen.add(have)
    return found


def scopes(inputs: QualityInputs, fit: np.ndarray) -> dict[str, np.ndarray]:
    """The fit cases (nested CV) and every dataset's cases outside the fit."""
    found = {FIT_SCOPE: fit}
    for dataset in sorted(set(inputs.datasets[~fit])):
        found[dataset] = ~fit & (inputs.datasets == dataset)
    return found


def uncertainty_baseline(inputs: QualityInputs, fit: np.ndarray) -> tuple[str, np.ndarray] | None:
    """The uncertainty feature whose sign-corrected value ranks the fit cells' Dice best (fit labels only)."""
    best = None
    for j, name in enumerate(inputs.names):
        if inputs.group_of(name) != UNCERTAINTY:
            continue
        values, dice = inputs.features[fit][..., j].ravel(), inputs.dice[fit].ravel()
        known = np.isfinite(values) & np.isfinite(dice)
        if known.sum() < 3 or np.ptp(values[known]) == 0:
            continue
        rho = stats.spearmanr(values[known], dice[known])[0]
        if np.isfinite(rho) and (best is None or abs(rho) > best[0]):
            best = (abs(rho), name, np.sign(rho) * inputs.features[..., j])
    return None if best is None else (f"uncertainty: {best[1]}", best[2])


def analyze_quality(con, run_id: str, config: QualityConfig = QualityConfig()) -> dict:
    """Estimate every case's Dice, validate on the labelled cases outside the fit, write the tables."""
    inputs = build_inputs(con, run_id, config)
    fit = fit_cases(inputs, config)
    if fit.sum() < config.min_cases:
        return {"run_id": run_id, "n_fit": int(fit.sum()), "skipped": "too few labelled reference cases"}
    sets = available_sets(inputs)
    chosen = config.feature_set if config.feature_set in sets else "all"
    wanted = sets if config.ablation else {chosen: sets[chosen]}
    results = {name: estimate_dice(inputs.select(groups), fit, config) for name, groups in wanted.items()}
    result, where = results[chosen], scopes(inputs, fit)
    metrics = {scope: validation_metrics(inputs, result, cases) for scope, cases in where.items()}
    ablation = {name: {scope: validation_metrics(inputs, r, cases) for scope, cases in where.items()}
                for name, r in results.items()}
    rankings = {name: r.estimate for name, r in results.items()}
    baseline = uncertainty_baseline(inputs, fit)
    if baseline is not None:
        rankings[baseline[0]] = baseline[1]
    risk = {scope: curves(inputs, rankings, cases) for scope, cases in where.items()}
    for scope, frame in risk.items():      # the baseline ranking's AURC beside the feature sets'
        for name in set(frame.ranking) - set(results):
            ablation.setdefault(name, {}).setdefault(scope, {})["aurc"] = float(
                frame.risk[frame.ranking == name].mean())
    write_quality(con, run_id, inputs, result, metrics, config,
                  extra=_extra_tables(run_id, inputs, results[chosen], inputs.select(sets[chosen]), ablation, risk,
                                      where))
    return {"run_id": run_id, "n_fit": int(fit.sum()), "features": inputs.names, "metrics": metrics,
            "estimates": result, "ablation": ablation, "feature_set": chosen,
            "class_coverage": {scope: per_class_coverage(inputs, result, cases) for scope, cases in where.items()}}


def _extra_tables(run_id, inputs, result, chosen_inputs, ablation, risk, where) -> dict[str, pd.DataFrame]:
    counts = {scope: int(cases.sum()) for scope, cases in where.items()}
    rows = [{"run_id": run_id, "feature_set": name, "scope": scope, "metric": metric, "value": value,
             "n": counts[scope]} for name, by_scope in ablation.items() for scope, values in by_scope.items()
            for metric, value in values.items()]
    ablation_table = pd.DataFrame(rows, columns=["run_id", "feature_set", "scope", "metric", "value", "n"])
    risk_table = pd.concat([frame.assign(run_id=run_id, scope=scope) for scope, frame in risk.items()],
                           ignore_index=True)[["run_id", "scope", "ranking", "position", "coverage", "risk"]]
    return {"quality_ablation": ablation_table, "risk_coverage": risk_table,
            "quality_contribution": contributions(run_id, chosen_inputs, result)}


def contributions(run_id: str, inputs: QualityInputs, result: Estimates) -> pd.DataFrame:
    """The linear terms of every flagged (case, class), from the model fitted on every fit case."""
    columns = ["run_id", "case_id", "class_id", "feature", "feature_group", "value", "contribution"]
    flagged = np.argwhere(result.estimate < result.failure_below[:-1])
    if result.model is None or not len(flagged) or not inputs.names:
        return pd.DataFrame(columns=columns)
    z = result.model.standardised(inputs.features)
    terms = result.model.terms(inputs.features)
    rows = [(run_id, inputs.case_ids[i], int(inputs.class_ids[j]), name, inputs.group_of(name),
             float(z[i, j, f]), float(terms[i, j, f]))
            for i, j in flagged for f, name in enumerate(inputs.names)]
    return pd.DataFrame(rows, columns=columns)


def write_quality(con, run_id: str, inputs: QualityInputs, result: Estimates, metrics: dict, config,
                  extra: dict[str, pd.DataFrame] | None = None) -> None:
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
    store.replace_analysis(con, run_id, {"dice_estimate": table, "dice_estimate_quality": quality, **(extra or {})})
