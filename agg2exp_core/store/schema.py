"""The store's tables and the vocabulary of the names written into them."""
from __future__ import annotations

import duckdb

from agg2exp_core.vocabulary import AVERAGE_TARGET, MASS_KINDS, METHODS, METRICS, RUN_SOURCES  # noqa: F401

SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS cases(
    case_id VARCHAR PRIMARY KEY, dataset VARCHAR NOT NULL, split VARCHAR,
    sex VARCHAR, age DOUBLE, image_path VARCHAR, label_path VARCHAR,
    pathologies VARCHAR DEFAULT '');
CREATE TABLE IF NOT EXISTS rois(
    roi_id INTEGER PRIMARY KEY, name VARCHAR UNIQUE NOT NULL, grp VARCHAR NOT NULL,
    color VARCHAR NOT NULL, is_class BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    run_id VARCHAR PRIMARY KEY, method VARCHAR NOT NULL, params JSON,
    model_sha256 VARCHAR, label_names JSON, code_version VARCHAR,
    source VARCHAR, description VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS case_status(
    run_id VARCHAR, case_id VARCHAR, seconds DOUBLE, finished_at TIMESTAMP,
    PRIMARY KEY(run_id, case_id));
CREATE TABLE IF NOT EXISTS local_importance(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, source_id INTEGER,
    mass_abs DOUBLE, mass_pos DOUBLE, mass_neg DOUBLE, volume_share DOUBLE, mass_lift DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, source_id));
CREATE TABLE IF NOT EXISTS dice(
    model_sha256 VARCHAR, case_id VARCHAR, class_id INTEGER, dice DOUBLE,
    PRIMARY KEY(model_sha256, case_id, class_id));
CREATE TABLE IF NOT EXISTS artifacts(
    run_id VARCHAR, case_id VARCHAR, path VARCHAR, PRIMARY KEY(run_id, case_id));
CREATE TABLE IF NOT EXISTS case_inputs(
    run_id VARCHAR, case_id VARCHAR, inputs JSON, PRIMARY KEY(run_id, case_id));
CREATE TABLE IF NOT EXISTS case_started(
    run_id VARCHAR, case_id VARCHAR, started_at TIMESTAMP, pid INTEGER, PRIMARY KEY(run_id, case_id));
CREATE TABLE IF NOT EXISTS failures(
    run_id VARCHAR, case_id VARCHAR, stage VARCHAR, message VARCHAR, failed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS anomaly(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, score DOUBLE, is_outlier BOOLEAN,
    PRIMARY KEY(run_id, case_id, target_id));
CREATE TABLE IF NOT EXISTS anomaly_dice(
    run_id VARCHAR, target_id INTEGER, spearman_rho DOUBLE, p_value DOUBLE, n INTEGER,
    PRIMARY KEY(run_id, target_id));
CREATE TABLE IF NOT EXISTS outlier_tests(
    run_id VARCHAR, target_id INTEGER, variable VARCHAR, test VARCHAR,
    statistic DOUBLE, p_value DOUBLE, n_inliers INTEGER, n_outliers INTEGER,
    PRIMARY KEY(run_id, target_id, variable));
CREATE TABLE IF NOT EXISTS method_eval(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, metric VARCHAR, value DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, metric));
CREATE TABLE IF NOT EXISTS perturbation_curve(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, ordering VARCHAR,
    step INTEGER, fraction DOUBLE, value DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, ordering, step));
CREATE TABLE IF NOT EXISTS causal_effect(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, source_id INTEGER,
    ate DOUBLE, se DOUBLE, n INTEGER,
    PRIMARY KEY(run_id, case_id, target_id, source_id));
CREATE TABLE IF NOT EXISTS component_effect(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, component VARCHAR, position INTEGER,
    ate DOUBLE, se DOUBLE, n INTEGER,
    PRIMARY KEY(run_id, case_id, target_id, component));
CREATE TABLE IF NOT EXISTS relevance_mask(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, share DOUBLE, n_units INTEGER, n_voxels INTEGER,
    dice_keep DOUBLE, dice_remove DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id));
-- Analyses beyond the paper (agg2exp_core.analysis: drift, quality, reasons, uncertainty, agreement, paper).
CREATE TABLE IF NOT EXISTS drift(
    run_id VARCHAR, dataset VARCHAR, target_id INTEGER, statistic DOUBLE, p_value DOUBLE, q_value DOUBLE,
    n_ref INTEGER, n_new INTEGER, reference VARCHAR, n_permutations INTEGER,
    kind VARCHAR, p_value_raw DOUBLE, q_value_raw DOUBLE, PRIMARY KEY(run_id, dataset, target_id));
CREATE TABLE IF NOT EXISTS drift_cells(
    run_id VARCHAR, dataset VARCHAR, target_id INTEGER, source_id INTEGER, mean_ref DOUBLE, mean_new DOUBLE,
    difference DOUBLE, effect_size DOUBLE, p_value DOUBLE, q_value DOUBLE,
    PRIMARY KEY(run_id, dataset, target_id, source_id));
CREATE TABLE IF NOT EXISTS drift_cases(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, score DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id));
CREATE TABLE IF NOT EXISTS dice_estimate(
    run_id VARCHAR, case_id VARCHAR, class_id INTEGER, estimate DOUBLE, low DOUBLE, high DOUBLE,
    level DOUBLE, likely_failure BOOLEAN, failure_below DOUBLE, fitted BOOLEAN,
    PRIMARY KEY(run_id, case_id, class_id));
CREATE TABLE IF NOT EXISTS dice_estimate_quality(
    run_id VARCHAR, scope VARCHAR, metric VARCHAR, value DOUBLE, n INTEGER,
    PRIMARY KEY(run_id, scope, metric));
CREATE TABLE IF NOT EXISTS outlier_reasons(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, source_id INTEGER, contribution DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, source_id));
CREATE TABLE IF NOT EXISTS bootstrap_ci(
    run_id VARCHAR, cohort VARCHAR, kind VARCHAR, target_id INTEGER, source_id INTEGER,
    estimate DOUBLE, low DOUBLE, high DOUBLE, n INTEGER, n_boot INTEGER, level DOUBLE,
    PRIMARY KEY(run_id, cohort, kind, target_id, source_id));
CREATE TABLE IF NOT EXISTS sampling_noise(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, source_id INTEGER, kind VARCHAR,
    se DOUBLE, low DOUBLE, high DOUBLE, n_samples INTEGER,
    PRIMARY KEY(run_id, case_id, target_id, source_id, kind));
CREATE TABLE IF NOT EXISTS method_agreement(
    run_id VARCHAR, other_run_id VARCHAR, target_id INTEGER, spearman_mean DOUBLE, spearman_low DOUBLE,
    spearman_high DOUBLE, spearman_median DOUBLE, n_cases INTEGER, kind VARCHAR, null_mean DOUBLE,
    null_high DOUBLE, PRIMARY KEY(run_id, other_run_id, target_id));
CREATE TABLE IF NOT EXISTS method_disagreement(
    run_id VARCHAR, other_run_id VARCHAR, target_id INTEGER, source_id INTEGER, mean_run DOUBLE,
    mean_other DOUBLE, difference DOUBLE, mean_abs_difference DOUBLE,
    PRIMARY KEY(run_id, other_run_id, target_id, source_id));
CREATE TABLE IF NOT EXISTS region_attribution(
    run_id VARCHAR, case_id VARCHAR, target_id INTEGER, source_id INTEGER, mean_attribution DOUBLE,
    PRIMARY KEY(run_id, case_id, target_id, source_id));
CREATE TABLE IF NOT EXISTS paper_parity(
    run_id VARCHAR, target_id INTEGER, label VARCHAR, spearman_rho DOUBLE, p_value DOUBLE,
    paper_rho DOUBLE, paper_p_value DOUBLE, n INTEGER,
    PRIMARY KEY(run_id, target_id));
CREATE TABLE IF NOT EXISTS case_field(
    case_id VARCHAR, name VARCHAR, kind VARCHAR NOT NULL, value VARCHAR, number DOUBLE, source VARCHAR,
    PRIMARY KEY(case_id, name));
CREATE TABLE IF NOT EXISTS case_uncertainty(
    model_sha256 VARCHAR, case_id VARCHAR, class_id INTEGER, feature VARCHAR, value DOUBLE,
    PRIMARY KEY(model_sha256, case_id, class_id, feature));
CREATE TABLE IF NOT EXISTS failure_slice(
    run_id VARCHAR, slice_id INTEGER, class_id INTEGER, source VARCHAR, description VARCHAR, members INTEGER,
    n INTEGER, effect DOUBLE, p_value DOUBLE, q_value DOUBLE, uses_labels BOOLEAN, rank INTEGER,
    PRIMARY KEY(run_id, slice_id));
CREATE TABLE IF NOT EXISTS failure_slice_member(
    run_id VARCHAR, slice_id INTEGER, case_id VARCHAR, PRIMARY KEY(run_id, slice_id, case_id));
CREATE TABLE IF NOT EXISTS failure_slice_cell(
    run_id VARCHAR, slice_id INTEGER, target_id INTEGER, source_id INTEGER, mean_in DOUBLE, mean_out DOUBLE,
    difference DOUBLE, p_value DOUBLE, q_value DOUBLE, PRIMARY KEY(run_id, slice_id, target_id, source_id));
CREATE TABLE IF NOT EXISTS sanity_check(
    run_id VARCHAR, case_id VARCHAR, class_id INTEGER, "check" VARCHAR, step INTEGER, layer VARCHAR,
    metric VARCHAR, value DOUBLE, baseline DOUBLE, passed BOOLEAN,
    PRIMARY KEY(run_id, case_id, class_id, "check", step, metric));
CREATE TABLE IF NOT EXISTS retest_icc(
    run_id VARCHAR, factor VARCHAR, kind VARCHAR, target_id INTEGER, source_id INTEGER, icc DOUBLE,
    n_cases INTEGER, n_repeats INTEGER, PRIMARY KEY(run_id, factor, kind, target_id, source_id));
CREATE TABLE IF NOT EXISTS quality_ablation(
    run_id VARCHAR, feature_set VARCHAR, scope VARCHAR, metric VARCHAR, value DOUBLE, n INTEGER,
    PRIMARY KEY(run_id, feature_set, scope, metric));
CREATE TABLE IF NOT EXISTS risk_coverage(
    run_id VARCHAR, scope VARCHAR, ranking VARCHAR, position INTEGER, coverage DOUBLE, risk DOUBLE,
    PRIMARY KEY(run_id, scope, ranking, position));
CREATE TABLE IF NOT EXISTS quality_contribution(
    run_id VARCHAR, case_id VARCHAR, class_id INTEGER, feature VARCHAR, feature_group VARCHAR, value DOUBLE,
    contribution DOUBLE, PRIMARY KEY(run_id, case_id, class_id, feature));
CREATE TABLE IF NOT EXISTS analysis_settings(
    run_id VARCHAR PRIMARY KEY, settings JSON, score_convention VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS build_status(
    step VARCHAR PRIMARY KEY, position INTEGER NOT NULL, title VARCHAR NOT NULL, state VARCHAR NOT NULL,
    done INTEGER, total INTEGER, unit VARCHAR, remaining_s DOUBLE, run_id VARCHAR, started_at TIMESTAMP,
    updated_at TIMESTAMP);
"""


# case_field: a case's metadata beyond the cases table (any extra manifest column, DICOM header fields):
# ``kind`` 'categorical' (``value`` set) or 'numeric' (``number`` set, ``value`` its text), ``source`` 'manifest'
# or 'dicom'. case_uncertainty: the model's own uncertainty per case and class (test-time augmentation /
# fold ensemble; ``feature`` names in the writer's module), keyed by model like ``dice``.
# failure_slice: a subgroup on which class ``class_id`` (AVERAGE_TARGET: all classes) fails, ``source``
# 'metadata' or 'explanation', ``members`` its size (= ``n``), ``effect`` the Dice drop against the rest,
# ``uses_labels`` true Dice or expected Dice; its cases in failure_slice_member, the matrix cells that
# differ in failure_slice_cell. sanity_check: the randomisation checks of a run (``check`` e.g. 'mprt',
# ``step`` the randomised depth, 0 = trained); retest_icc: ICC(2,1) of a cell across repeats of ``factor``.
# quality_ablation: the expected-Dice metrics of each feature set (and a baseline ranking's AURC) by scope;
# risk_coverage: the risk (mean 1 - Dice) of the most confident cells at each coverage, per ranking;
# quality_contribution: the quality model's linear terms of a flagged case and class (analysis/quality_model.py).
# case_inputs: the input files (path, size, mtime, sha256) a done case was computed from;
# case_started: cases being computed in the writer's own process (cleared when written),
# so a case during which the process died is known on the rerun (store/attempts.py).
# anomaly.target_id / anomaly_dice.target_id: AVERAGE_TARGET (-1) stands for "averaged over classes".
ANALYSIS_TABLES = ("anomaly", "anomaly_dice", "outlier_tests", "method_eval", "perturbation_curve",
                   "drift", "drift_cells", "drift_cases", "dice_estimate", "dice_estimate_quality",
                   "outlier_reasons", "bootstrap_ci", "method_agreement", "method_disagreement",
                   "paper_parity", "analysis_settings", "failure_slice", "failure_slice_member",
                   "failure_slice_cell", "sanity_check", "retest_icc", "quality_ablation", "risk_coverage",
                   "quality_contribution")
# drift_cases.target_id, dice_estimate.class_id, bootstrap_ci.target_id, method_agreement.target_id:
# AVERAGE_TARGET (-1) also stands for "over all classes" there. outlier_tests.target_id UNION_TARGET (-2):
# outliers for any class (the paper's sex/age tests). bootstrap_ci.cohort: ALL_CASES or a dataset name.
# Per-case results (written with the case, in its transaction), by column count:
# causal_effect: signed ATE of replacing source RoI b on target class a, its standard error and the
# donors behind it; component_effect: the same for ablating a network component (``position``:
# order in the network); relevance_mask: the supervoxel relevance mask of a class and its
# faithfulness (Dice of the prediction keeping only / removing the mask); region_attribution: mean
# |attribution| of class a per voxel of region b (the paper's ``_mean`` columns); sampling_noise: the
# jackknife standard error of cell (a, b) of a kind over a SmoothGrad run's n_samples noise samples and
# the normal interval estimate ± z·SE at vocabulary.SAMPLING_NOISE_LEVEL, clipped to [0, 1].
CASE_RESULT_TABLES = {"causal_effect": 7, "component_effect": 8, "relevance_mask": 8, "region_attribution": 5,
                      "sampling_noise": 9}
# build_status: the steps of a build that publishes while it runs (the demo), in ``position``
# order, so readers can say what is still being built: ``state`` one of BUILD_STATES, ``done``
# of ``total`` items (``unit``: "cases"; NULL for a step without items) since ``started_at``,
# ``remaining_s`` the writer's estimate of the time left (its progress bar's ETA), ``run_id`` the
# run the step computes, if any (incomplete while the step is not done).
BUILD_STATES = ("pending", "running", "done", "failed")


# Columns added after a table's first release (a store written before gets them, NULL, on open):
# local_importance.volume_share |R_b|/|V| of source b in the case and mass_lift = mass_abs / volume_share
# (NULL where the volumes are unknown, e.g. an import without the published means); drift.kind the
# mass kind the class tests ran on, p/q_value_raw the same test on raw absolute mass; method_agreement.kind
# likewise, null_mean / null_high the mean and 95th percentile of the agreement of volume-only maps.
ADDED_COLUMNS = (("local_importance", "volume_share", "DOUBLE"), ("local_importance", "mass_lift", "DOUBLE"),
                 ("drift", "kind", "VARCHAR"), ("drift", "p_value_raw", "DOUBLE"), ("drift", "q_value_raw", "DOUBLE"),
                 ("method_agreement", "kind", "VARCHAR"), ("method_agreement", "null_mean", "DOUBLE"),
                 ("method_agreement", "null_high", "DOUBLE"))


def init_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)
    for table, column, sql_type in ADDED_COLUMNS:
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
