"""The DuckDB store: ``schema`` (tables and the vocabulary of their names), ``writer`` (every
write of the core, in transactions), ``publication`` (one writer at a time, atomic snapshots
for concurrent readers), ``attempts`` (which inputs a case was computed from, cases in flight),
``lockdown`` (every connection to a store file: read-only where it reads, no external access,
objects beyond the schema refused) and ``queries`` (every read, shared by ``analyze`` and the
dashboard, whose ``dashboard/data.py`` only caches them)."""
from agg2exp_core.store.attempts import (CRASHED_STAGE, TIMEOUT_STAGE, clear_started, crashed_cases, done_inputs,
                                         mark_started, started_cases, timed_out_cases)
from agg2exp_core.store.field_writer import write_case_fields, write_new_case_fields
from agg2exp_core.store.lockdown import connect, open_reader, open_writable
from agg2exp_core.store.queries import (analysis_settings, anomaly_scores, artifact_paths, build_complete,
                                        build_status, case_metadata, class_roi_ids, dice_of_model, done_cases,
                                        has_method_evaluation, latest_run_id, local_cube, local_matrices, matrix_runs,
                                        mean_anomaly_by_case, roi_names, run_exists, run_label_names, run_model,
                                        store_folder, volume_shares)
from agg2exp_core.store.schema import (ANALYSIS_TABLES, AVERAGE_TARGET, BUILD_STATES, CASE_RESULT_TABLES, SCHEMA,
                                       SCHEMA_VERSION, init_schema)
from agg2exp_core.store.writer import (CASE_COLUMNS, build_step_reporter, causal_rows, code_version_string,
                                       ensure_run, importance_rows, open_writer, plan_build, publish, record_failure,
                                       register_new_cases, replace_analysis, replace_table_rows, run_id_for,
                                       transaction, update_build_step, upsert_cases, upsert_rois, write_case,
                                       write_imported_run, write_method_eval, writing_path)

__all__ = ["ANALYSIS_TABLES", "AVERAGE_TARGET", "BUILD_STATES", "CASE_COLUMNS", "CASE_RESULT_TABLES", "CRASHED_STAGE",
           "SCHEMA", "SCHEMA_VERSION", "analysis_settings", "anomaly_scores", "artifact_paths", "build_complete",
           "build_status", "build_step_reporter", "case_metadata", "causal_rows", "class_roi_ids", "clear_started",
           "code_version_string", "connect", "crashed_cases", "dice_of_model", "done_cases", "done_inputs",
           "ensure_run", "has_method_evaluation", "importance_rows", "init_schema", "latest_run_id", "local_cube",
           "local_matrices", "mark_started", "matrix_runs", "mean_anomaly_by_case", "open_reader", "open_writable",
           "open_writer", "plan_build", "publish", "record_failure", "register_new_cases", "replace_analysis",
           "replace_table_rows", "roi_names", "run_exists", "run_id_for", "run_label_names", "run_model",
           "started_cases", "store_folder", "TIMEOUT_STAGE", "timed_out_cases", "transaction", "update_build_step", "upsert_cases", "upsert_rois",
           "volume_shares", "write_case", "write_case_fields", "write_new_case_fields", "write_imported_run",
           "write_method_eval", "writing_path"]
