"""The DuckDB store: ``schema`` (tables and the vocabulary of their names), ``writer`` (every
write of the core, in transactions, and atomic publication for concurrent readers) and
``readers`` (the core's queries; the dashboard reads through ``dashboard/data.py``)."""
from agg2exp_core.store.readers import (analysis_settings, anomaly_scores, artifact_paths, case_metadata, class_roi_ids, dice_of_model,
                                        done_cases, has_method_evaluation, latest_run_id, local_matrices,
                                        matrix_runs, mean_anomaly_by_case, roi_names, run_exists, run_label_names,
                                        run_model, store_folder)
from agg2exp_core.store.schema import ANALYSIS_TABLES, AVERAGE_TARGET, SCHEMA, SCHEMA_VERSION, connect, init_schema
from agg2exp_core.store.writer import (CASE_COLUMNS, code_version_string, ensure_run, importance_rows, open_writer,
                                       publish, record_failure, register_new_cases, replace_analysis, replace_table_rows,
                                       run_id_for,
                                       transaction, upsert_cases, upsert_rois, write_case, write_imported_run,
                                       write_method_eval, writing_path)

__all__ = ["analysis_settings", "anomaly_scores", "artifact_paths", "matrix_runs", "roi_names", "run_label_names", "store_folder",
           "ANALYSIS_TABLES", "AVERAGE_TARGET", "CASE_COLUMNS", "SCHEMA", "SCHEMA_VERSION", "case_metadata",
           "class_roi_ids", "code_version_string", "connect", "dice_of_model", "done_cases", "ensure_run",
           "has_method_evaluation", "importance_rows", "init_schema", "latest_run_id", "local_matrices",
           "mean_anomaly_by_case", "open_writer", "publish", "record_failure", "register_new_cases",
           "replace_analysis", "replace_table_rows", "run_exists", "run_id_for", "run_model", "transaction", "upsert_cases",
           "upsert_rois", "write_case", "write_imported_run", "write_method_eval", "writing_path"]
