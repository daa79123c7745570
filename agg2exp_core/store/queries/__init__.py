"""Every read of the store, shared by ``analyze`` (agg2exp_core.analysis) and the dashboard.

Modules by concern: ``connection`` (StoreRef, the query runner, table checks), ``cohort``
(the cohort filter and its SQL), ``catalog`` (runs, RoIs, build progress, settings,
artefacts), ``cases``, ``matrices`` (mean matrix, one case, ``local_cube``),
``distributions`` (box statistics), ``outliers``, ``evaluation``, ``causal``, ``analyses``,
``fields`` (case metadata beyond the cases table), ``slices`` (failure slices), ``retest`` (test-retest ICC),
``sanity`` (the sanity checks).
Each function takes a DuckDB connection on the store (``lockdown.open_reader``, or the
writer's connection) and returns a frame, numpy arrays or plain values; none caches (the
dashboard caches in ``dashboard/data.py``).
"""
from agg2exp_core.store.queries.analyses import (case_dice_estimates, dice_estimate_quality, dice_estimates,
                                                 drift_cases, drift_cells, drift_tests, method_agreement,
                                                 method_disagreement, paper_parity, sampling_noise, stored_intervals)
from agg2exp_core.store.queries.cases import case_metadata, cohort_cases, dice_of_model, done_cases, run_case_ids
from agg2exp_core.store.queries.catalog import (BUILD_COLUMNS, REQUIRED_TABLES, analysis_settings, artifact_paths,
                                                build_complete, build_status, class_roi_ids, latest_run_id,
                                                matrix_runs, roi_names, rois, run_exists, run_label_names, run_model,
                                                runs, store_folder)
from agg2exp_core.store.queries.causal import (causal_case, causal_summary, causal_target_values, component_effects,
                                               relevance_masks)
from agg2exp_core.store.queries.cohort import (ALL_CASES, PATHOLOGY_ANY, PATHOLOGY_NONE, SPACE, UNKNOWN, CohortFilter,
                                               FieldCondition, where_clause)
from agg2exp_core.store.queries.connection import (StoreRef, fetch, has_table, mass_column, reading, store_ref,
                                                   table_names)
from agg2exp_core.store.queries.distributions import (POINTS_PER_SIDE, Distribution, context_mass_distribution,
                                                      dice_distribution, source_distribution)
from agg2exp_core.store.queries.evaluation import (evaluated_case_count, evaluated_runs, has_method_evaluation,
                                                   method_eval_summary, perturbation_summary)
from agg2exp_core.store.queries.fields import CATEGORICAL, FIELD_KINDS, NUMERIC, case_fields, field_catalog
from agg2exp_core.store.queries.slices import (expected_dice_table, failure_slice_cells, failure_slice_classes,
                                               failure_slice_dice, failure_slice_members, failure_slice_reasons,
                                               failure_slices, slice_case_metadata)
from agg2exp_core.store.queries.matrices import (case_matrix, global_matrix, local_cube, local_matrices,
                                                 volume_shares)
from agg2exp_core.store.queries.retest import retest_icc
from agg2exp_core.store.queries.outliers import (anomaly_dice, anomaly_ranking, anomaly_scores, anomaly_targets,
                                                 mean_anomaly_by_case, outlier_reasons, outlier_tests)
from agg2exp_core.store.queries.sanity import sanity_curves, sanity_rows, sanity_runs, sanity_verdicts

__all__ = ["ALL_CASES", "analysis_settings", "anomaly_dice", "anomaly_ranking", "anomaly_scores", "anomaly_targets",
           "artifact_paths", "BUILD_COLUMNS", "build_complete", "build_status", "case_dice_estimates", "case_fields",
           "case_matrix", "case_metadata", "CATEGORICAL", "causal_case", "causal_summary", "causal_target_values",
           "class_roi_ids", "cohort_cases", "CohortFilter", "component_effects", "context_mass_distribution",
           "dice_distribution", "dice_estimate_quality", "dice_estimates", "dice_of_model", "Distribution",
           "done_cases", "drift_cases", "drift_cells", "drift_tests", "evaluated_case_count", "evaluated_runs",
           "expected_dice_table", "failure_slice_cells", "failure_slice_classes", "failure_slice_dice",
           "failure_slice_members", "failure_slice_reasons", "failure_slices", "fetch", "field_catalog",
           "FIELD_KINDS", "FieldCondition", "global_matrix", "has_method_evaluation", "has_table", "latest_run_id",
           "local_cube", "local_matrices", "mass_column", "matrix_runs", "mean_anomaly_by_case", "method_agreement",
           "method_disagreement", "method_eval_summary", "NUMERIC", "outlier_reasons", "outlier_tests",
           "paper_parity", "PATHOLOGY_ANY", "PATHOLOGY_NONE", "perturbation_summary", "POINTS_PER_SIDE", "reading",
           "relevance_masks", "REQUIRED_TABLES", "retest_icc", "roi_names", "rois", "run_case_ids", "run_exists",
           "run_label_names", "run_model", "runs", "sampling_noise", "sanity_curves", "sanity_rows",
           "sanity_runs", "sanity_verdicts", "slice_case_metadata", "source_distribution",
           "SPACE", "store_folder", "store_ref", "stored_intervals", "StoreRef", "table_names", "UNKNOWN",
           "volume_shares", "where_clause"]
