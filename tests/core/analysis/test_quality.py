"""Label-free Dice estimate: known answers on synthetic inputs, the intervals, and the TSV2 K-fold check."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis import outliers, quality


def test_conformal_quantile_known_answers():
    assert quality.conformal_quantile(np.arange(1.0, 10.0), 0.8) == 8.0      # rank ceil(10 * 0.8) = 8
    # ceil((n + 1) 0.8) > n: no finite quantile has the guarantee, the interval is unbounded
    assert quality.conformal_quantile(np.array([0.3]), 0.8) == np.inf
    assert quality.conformal_quantile(np.arange(1.0, 4.0), 0.8) == np.inf
    assert quality.conformal_quantile(np.arange(1.0, 5.0), 0.8) == 4.0
    assert np.isnan(quality.conformal_quantile(np.array([np.nan]), 0.8))


def test_prediction_features_count_voxels_and_fragments():
    pred = np.zeros((6, 6, 6), dtype=np.uint8)
    pred[0, 0, 0] = pred[4, 4, 4] = 1                          # class 1 in two pieces
    pred[2:4, 2:4, 2:4] = 2
    volumes, components = quality.prediction_features(pred, 4)
    assert volumes.tolist() == [216 - 10, 2, 8, 0] and components.tolist() == [1, 2, 1, 0]


def synthetic_inputs(n_ref=30, n_new=30, seed=0, signal=True) -> quality.QualityInputs:
    """Dice falls with the novelty of the explanation; new cases are further from the reference."""
    rng = np.random.default_rng(seed)
    n, k = n_ref + n_new, 4
    novelty = np.abs(rng.normal(1.0, 0.3, size=(n, k)))
    novelty[n_ref:] *= rng.uniform(1.0, 3.0, size=(n_new, 1))
    noise = rng.normal(0, 0.01, size=(n, k))
    dice = np.clip(0.95 - 0.05 * novelty + noise if signal else 0.9 + 5 * noise, 0, 1)
    features = np.stack([novelty, np.repeat(novelty.mean(axis=1, keepdims=True), k, axis=1)], axis=-1)
    if not signal:
        features = rng.normal(size=features.shape)
    datasets = np.array(["ref"] * n_ref + ["new"] * n_new)
    return quality.QualityInputs([f"c{i}" for i in range(n)], list(range(k)), features,
                                 ["row_distance", "mean_row_distance"], dice, novelty, datasets,
                                 np.array(["test"] * n, dtype=object))


def test_estimates_rank_new_cases_and_intervals_cover_them():
    inputs = synthetic_inputs()
    config = quality.QualityConfig(fit_dataset="ref")
    fit = quality.fit_cases(inputs, config)
    assert fit.sum() == 30
    result = quality.estimate_dice(inputs, fit, config)
    metrics = quality.validation_metrics(inputs, result, ~fit)
    assert metrics["spearman_case_mean"] > 0.9 and metrics["coverage_class"] >= 0.7
    assert metrics["mae"] < metrics["mae_constant"]
    assert (result.low <= result.estimate).all() and (result.estimate <= result.high).all()
    # novelty widens the intervals: the new cases' are wider than the reference cases'
    width = result.high - result.low
    assert width[~fit].mean() > 1.3 * width[fit].mean()
    assert result.fitted[fit].all() and not result.fitted[~fit].any()


def test_training_cases_are_left_out_of_the_fit_when_enough_others_remain():
    inputs = synthetic_inputs(n_ref=12, n_new=4)
    inputs.splits[:6] = "train"
    assert quality.fit_cases(inputs, quality.QualityConfig(fit_dataset="ref")).sum() == 6
    inputs.splits[:9] = "train"                                  # only 3 others: keep the training cases
    assert quality.fit_cases(inputs, quality.QualityConfig(fit_dataset="ref")).sum() == 12


def test_without_signal_the_model_is_no_better_than_the_constant_and_the_baseline_artefact_shows():
    inputs = synthetic_inputs(n_ref=32, n_new=0, signal=False)
    runs = quality.repeated_kfold(inputs, folds=5, repeats=6)
    assert runs.mae_model.mean() >= 0.95 * runs.mae_baseline.mean()
    # a constant learnt on the other folds moves against the held-out cases: negative Spearman
    assert runs.spearman_baseline.mean() < 0


@pytest.fixture(scope="module")
def tsv2_analysed(tsv2_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("tsv2q") / "tsv2.duckdb"
    shutil.copyfile(tsv2_store["path"], path)
    outliers.analyze(path, tsv2_store["run_id"], outliers.AnalysisConfig())
    return path, tsv2_store["run_id"]


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_tsv2_repeated_kfold_against_a_constant_baseline(tsv2_analysed):
    """The honest check on the 32 published cases (see the issue): measured, not assumed.

    Measured (5-fold x 10): Spearman of estimated vs true mean Dice 0.00 +- 0.13 (raw-mass features beside
    anomaly scores of the lift; 0.20 +- 0.12 with raw anomaly scores last round), baseline -0.31 (the fold
    artefact), MAE 0.0147 for both: the estimate does not rank TSV2 cases beyond noise and is no more
    accurate than the class means.
    """
    path, run_id = tsv2_analysed
    with store.connect(path, read_only=True) as con:
        inputs = quality.build_inputs(con, run_id, quality.QualityConfig())
    assert len(inputs.case_ids) == 32 and "components" not in inputs.names    # no artefacts: no prediction features
    runs = quality.repeated_kfold(inputs, folds=5, repeats=10)
    assert runs.spearman_model.mean() > runs.spearman_baseline.mean() + 0.2
    assert abs(runs.mae_model.mean() - runs.mae_baseline.mean()) < 0.002       # no better, no worse
    assert -0.2 < runs.spearman_model.mean() < 0.5


def test_analyze_quality_writes_estimates_for_every_case_and_class(tsv2_analysed, tmp_path):
    path, run_id = tsv2_analysed
    copy = tmp_path / "q.duckdb"
    shutil.copyfile(path, copy)
    with store.open_writer(copy) as con:
        report = quality.analyze_quality(con, run_id)
        table = con.execute("SELECT * FROM dice_estimate WHERE run_id = ?", [run_id]).df()
        metrics = con.execute("SELECT scope, metric, value FROM dice_estimate_quality").df()
    assert report["n_fit"] == 32 and len(table) == 32 * 17 + 32
    assert table.fitted.all() and (table.low <= table.estimate).all() and (table.estimate <= table.high).all()
    assert set(table.level) == {0.8}
    coverage = metrics[(metrics.metric == "coverage_class")].value.iloc[0]
    assert 0.7 <= coverage <= 0.9                               # conformal: about the promised 80 %


def _classes_with_different_noise(n_fit, n_new, seed):
    """Three classes whose Dice deviates from its class mean by noise of SD 0.01 / 0.04 / 0.12 that no
    feature explains (features: noise), novelty constant (every case's interval scale is 1)."""
    rng = np.random.default_rng(seed)
    n, sds = n_fit + n_new, np.array([0.01, 0.04, 0.12])
    dice = np.array([0.9, 0.8, 0.6]) + rng.normal(size=(n, 3)) * sds
    features = rng.normal(size=(n, 3, 2))
    datasets = np.array(["ref"] * n_fit + ["new"] * n_new)
    return quality.QualityInputs([f"c{i}" for i in range(n)], [1, 2, 3], features, ["f1", "f2"], dice,
                                 np.ones((n, 3)), datasets, np.array(["test"] * n, dtype=object))


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_intervals_are_calibrated_per_class_on_new_and_on_fitted_cases():
    """Per-class (Mondrian) CV+: each class covers its new cases at about the nominal 0.80 (4,000 new
    cases per class, repeated over 4 fit sets of 150: MC SD < 0.01; CV+ alone guarantees 0.6, so the
    band is 0.80 +- 0.05). The pooled quantile covered 1.00 / 0.95 / 0.46. The fitted cases'
    coverage (nested CV+, out-of-sample) is about 0.80 too, not 1 by construction."""
    config = quality.QualityConfig(fit_dataset="ref")
    new_cover, fit_cover = [], []
    for seed in range(4):
        inputs = _classes_with_different_noise(150, 1000, seed)
        fit = quality.fit_cases(inputs, config)
        result = quality.estimate_dice(inputs, fit, config)
        inside = (inputs.dice >= result.low) & (inputs.dice <= result.high)
        new_cover.append(inside[~fit].mean(axis=0))
        fit_cover.append(inside[fit].mean(axis=0))
    per_class, fitted = np.mean(new_cover, axis=0), np.mean(fit_cover, axis=0)
    assert np.all(np.abs(per_class - 0.8) < 0.05), per_class
    assert np.all(np.abs(fitted - 0.8) < 0.08), fitted
    width = (result.high - result.low)[~fit].mean(axis=0)
    assert width[0] < width[1] < width[2]                       # each class as wide as its own noise


def test_too_few_calibration_cases_give_unbounded_intervals():
    """3 fit cases at level 0.8: ceil(4 x 0.8) = 4 > 3, so no finite bound is valid: [0, 1]."""
    inputs = _classes_with_different_noise(3, 5, 0)
    config = quality.QualityConfig(fit_dataset="ref", min_cases=2, folds=3)
    fit = quality.fit_cases(inputs, config)
    result = quality.estimate_dice(inputs, fit, config)
    assert np.all(result.low[~fit] == 0) and np.all(result.high[~fit] == 1)
    assert np.all(result.case_low[~fit] == 0) and np.all(result.case_high[~fit] == 1)
