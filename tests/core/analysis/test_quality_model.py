"""The quality model beyond last round's: feature-set ablation, flags at a user threshold, AURC known
answers, CV+ coverage over repetitions, unbounded intervals, contributions, and the store tables."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis import quality, quality_eval, quality_model
from agg2exp_core.analysis.quality_features import EXPLANATION, UNCERTAINTY, QualityInputs
from uncertainty_rows import quality_store


def planted_inputs(n_ref=30, n_new=30, k=4, seed=0, noise=0.01) -> QualityInputs:
    """Dice per case and class; an uncertainty feature that tracks it, an explanation feature that is noise."""
    rng = np.random.default_rng(seed)
    n = n_ref + n_new
    dice = np.clip(rng.normal(0.9, 0.05, size=(n, k)), 0, 1)
    agreement = dice + rng.normal(0, noise, size=(n, k))
    features = np.stack([agreement, rng.normal(size=(n, k))], axis=-1)
    return QualityInputs([f"c{i}" for i in range(n)], list(range(k)), features, ["u_tta_dice", "row_distance"],
                         dice, np.ones((n, k)), np.array(["ref"] * n_ref + ["new"] * n_new),
                         np.array(["test"] * n, dtype=object),
                         {"u_tta_dice": UNCERTAINTY, "row_distance": EXPLANATION})


def test_risk_curve_known_answers():
    loss = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    # perfect ranking: 0, 0, then three failures -> risks 0, 0, 1/3, 2/4, 3/5
    assert quality_eval.oracle_aurc(loss) == pytest.approx((0 + 0 + 1 / 3 + 2 / 4 + 3 / 5) / 5)
    assert quality_eval.aurc(-loss, loss) == quality_eval.oracle_aurc(loss)
    # the worst ranking: failures first
    assert quality_eval.aurc(loss, loss) == pytest.approx((1 + 1 + 1 + 3 / 4 + 3 / 5) / 5)
    assert quality_eval.risk_curve(np.arange(5.0), loss)[-1] == pytest.approx(loss.mean())


def test_random_ranking_aurc_is_the_mean_loss_within_monte_carlo_error():
    rng = np.random.default_rng(1)
    loss = rng.uniform(0, 0.3, 200)
    values = np.array([quality_eval.aurc(rng.random(200), loss) for _ in range(400)])
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert abs(values.mean() - loss.mean()) < 3 * se
    assert quality_eval.oracle_aurc(loss) < values.min()


def test_uncertainty_feature_ranks_failures_and_beats_the_constant():
    inputs = planted_inputs()
    config = quality.QualityConfig(fit_dataset="ref", failure_below=0.85)
    fit = quality.fit_cases(inputs, config)
    results = {name: quality.estimate_dice(inputs.select(groups), fit, config)
               for name, groups in quality.available_sets(inputs).items()}
    assert set(results) == {"all", "uncertainty", "explanation", "explanation+uncertainty", "constant"}
    metrics = {name: quality.validation_metrics(inputs, r, ~fit) for name, r in results.items()}
    assert metrics["uncertainty"]["mae"] < 0.5 * metrics["constant"]["mae"]
    assert metrics["uncertainty"]["auroc"] > 0.95 > metrics["explanation"]["auroc"]
    assert metrics["uncertainty"]["aurc"] < metrics["constant"]["aurc"]
    assert metrics["uncertainty"]["aurc"] >= metrics["uncertainty"]["aurc_oracle"]
    assert np.isnan(metrics["constant"]["spearman_case_mean"])   # one estimate for every case: no ranking


def test_a_perturbation_that_breaks_a_class_lowers_its_expected_dice_and_raises_its_flag():
    inputs = planted_inputs()
    config = quality.QualityConfig(fit_dataset="ref", failure_below=0.8)
    fit = quality.fit_cases(inputs, config)
    case, cls = int(np.flatnonzero(~fit)[0]), 2
    before = quality.estimate_dice(inputs, fit, config)
    assert before.estimate[case, cls] > 0.8            # a healthy cell
    inputs.features[case, cls, 0] = 0.55               # augmentations disagree on that class only
    after = quality.estimate_dice(inputs, fit, config)
    assert after.estimate[case, cls] < before.estimate[case, cls] - 0.2
    assert after.estimate[case, cls] < after.failure_below[cls]
    assert np.allclose(np.delete(after.estimate[case], cls), np.delete(before.estimate[case], cls))


def test_too_few_calibration_cases_give_unbounded_intervals():
    inputs = planted_inputs(n_ref=3, n_new=10)
    config = quality.QualityConfig(fit_dataset="ref", min_cases=3)
    fit = quality.fit_cases(inputs, config)
    result = quality.estimate_dice(inputs, fit, config)    # ceil(4 * 0.8) = 4 > 3 calibration cases
    assert (result.low[~fit] == 0).all() and (result.high[~fit] == 1).all()
    assert (result.case_low[~fit] == 0).all() and (result.case_high[~fit] == 1).all()


def test_cv_plus_class_intervals_cover_at_the_level_over_repetitions():
    """Exchangeable cases: coverage of 80 % intervals over 40 repetitions within Monte-Carlo error."""
    config = quality.QualityConfig(fit_dataset="ref", level=0.8, folds=5)
    covered = []
    for seed in range(40):
        inputs = planted_inputs(n_ref=40, n_new=40, k=3, seed=seed, noise=0.03)
        fit = quality.fit_cases(inputs, config)
        scale = np.ones((len(fit), 4))
        _, low, high = quality_model.cv_plus(inputs.features[fit], inputs.dice[fit], scale[fit],
                                             inputs.features[~fit], scale[~fit], config)
        dice = inputs.dice[~fit]
        covered.append(((dice >= low[:, :-1]) & (dice <= high[:, :-1])).mean(axis=0))
    covered = np.array(covered)                                  # [repetitions, classes]
    se = covered.std(ddof=1, axis=0) / np.sqrt(len(covered))
    assert (covered.mean(axis=0) > 0.8 - 3 * se).all()          # valid per class
    assert (covered.mean(axis=0) < 0.8 + 1 / 41 + 3 * se + 0.03).all()   # and not trivially wide


def test_contributions_are_the_linear_terms_of_the_estimate():
    inputs = planted_inputs()
    config = quality.QualityConfig(fit_dataset="ref", failure_below=0.85)
    fit = quality.fit_cases(inputs, config)
    result = quality.estimate_dice(inputs, fit, config)
    table = quality.contributions("run", inputs, result)
    flagged = result.estimate < 0.85
    assert table.groupby(["case_id", "class_id"]).ngroups == flagged.sum() > 0
    row = table[~table.case_id.isin([inputs.case_ids[i] for i in np.flatnonzero(fit)])].iloc[0]
    i, j = inputs.case_ids.index(row.case_id), int(row.class_id)
    total = table[(table.case_id == row.case_id) & (table.class_id == j)].contribution.sum()
    raw = total + result.model.ridge.intercept_ + result.model.class_mean[j]
    assert np.clip(raw, 0, 1) == pytest.approx(result.estimate[i, j])
    strongest = table[(table.case_id == row.case_id) & (table.class_id == j)].sort_values(
        "contribution").iloc[0]
    assert strongest.feature == "u_tta_dice" and strongest.feature_group == UNCERTAINTY


@pytest.fixture(scope="module")
def qc_store(synthetic_store, tmp_path_factory):
    return quality_store(synthetic_store, tmp_path_factory.mktemp("qc"))


@pytest.mark.slow   # > 15 s on 2 cores: the whole analysis with its ablation
def test_analyze_quality_stores_ablation_curves_and_contributions(qc_store):
    report, run_id = qc_store["report"], qc_store["run_id"]
    assert {"u_tta_dice", "u_entropy", "class_volume_ratio", "row_distance"} <= set(report["features"])
    with store.open_reader(qc_store["path"]) as con:
        ablation = store.queries.quality_ablation(con, run_id)
        curves = store.queries.risk_coverage(con, run_id, "external")
        flagged = store.queries.flagged_cells(con, run_id)
        first = flagged.iloc[0]
        terms = store.queries.quality_contributions(con, run_id, first.case_id, int(first.class_id))
    sets = set(ablation.feature_set)
    assert {"all", "uncertainty", "explanation", "volume", "constant", "oracle", "random",
            "uncertainty: u_tta_dice"} <= sets
    aurc = curves.groupby("ranking").risk.mean()
    assert aurc["oracle"] <= aurc.min() + 1e-12 and aurc["uncertainty"] < aurc["constant"] < aurc["random"] + 0.01
    stored = ablation[(ablation.scope == "external") & (ablation.metric == "aurc")].set_index("feature_set").value
    assert stored["all"] == pytest.approx(aurc["all"])
    # the planted agreement tracks Dice: external Spearman and AUROC near perfect with it, the class means far less
    external = ablation[ablation.scope == "external"].pivot(index="feature_set", columns="metric", values="value")
    assert external.loc["uncertainty", "spearman_case_mean"] > 0.9
    assert external.loc["uncertainty", "mae"] < 0.5 * external.loc["constant", "mae"]
    assert len(flagged) and (flagged.estimate < 0.8).all() and len(terms) == len(report["features"])


def test_ablation_keeps_each_present_group_beside_all():
    """A store without uncertainty or volumes: 'explanation' alone is still in the ablation (equal to 'all')."""
    inputs = planted_inputs().select((EXPLANATION,))
    assert list(quality.available_sets(inputs)) == ["all", "explanation", "constant"]
    assert list(quality.available_sets(planted_inputs())) == ["all", "uncertainty", "explanation",
                                                              "explanation+uncertainty", "constant"]


def test_a_class_with_too_few_labelled_calibration_cases_gets_unbounded_intervals():
    """Class 3 labelled in only 3 fit cases: its intervals are [0, 1]; the other classes' stay finite."""
    inputs = planted_inputs()
    config = quality.QualityConfig(fit_dataset="ref")
    inputs.dice[3:30, 3] = np.nan                     # the reference cases 3..29 lack class 3's label
    fit = quality.fit_cases(inputs, config)
    assert fit.sum() == 30
    result = quality.estimate_dice(inputs, fit, config)
    new = ~fit
    assert (result.low[new, 3] == 0).all() and (result.high[new, 3] == 1).all()
    width = result.high[new, :3] - result.low[new, :3]
    assert (width < 0.5).all() and np.isfinite(result.estimate[new]).all()
