"""The dashboard's store reads: Streamlit's caches around the core's queries (``agg2exp_core.store.queries``).

No SQL here. A store is identified by its path *and* its file signature (``StoreRef``:
inode, mtime, size): the writer publishes by atomic rename, so a replaced file gets a new
signature, a new connection and fresh cached results (all keyed on the ``StoreRef``). The
connection is the core's locked-down reader (``agg2exp_core.store.lockdown``: read-only,
no external access, a store defining objects the schema does not know is refused); it is
shared between sessions, each query runs on its own cursor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

from agg2exp_core.store import artifacts, lockdown, queries
from agg2exp_core.store.queries import REQUIRED_TABLES, CohortFilter, Distribution, StoreRef, store_ref  # noqa: F401
from agg2exp_core.vocabulary import MASS_KINDS  # noqa: F401
from dashboard import config

POINTS_PER_SIDE = queries.POINTS_PER_SIDE      # points drawn per box and side outside the whiskers


@st.cache_resource(max_entries=4, show_spinner=False)
def _connection(path: str, signature: tuple[int, int, int]) -> duckdb.DuckDBPyConnection:
    """The locked-down read-only connection to one published version of a store (cached per signature)."""
    return lockdown.open_reader(path)


def _read(ref: StoreRef, read, *args, **kwargs):
    """``read(connection, *args, **kwargs)`` of a core query on its own cursor."""
    with queries.reading(_connection(ref.path, ref.signature)) as con:
        return read(con, *args, **kwargs)


# --- store-level tables ------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def table_names(ref: StoreRef) -> frozenset[str]:
    return _read(ref, queries.table_names)


def has_table(ref: StoreRef, name: str) -> bool:
    """Whether the store has a table that older stores lack (causal and analysis tables)."""
    return name in table_names(ref)


@st.cache_data(max_entries=16, show_spinner=False)
def runs(ref: StoreRef) -> pd.DataFrame:
    """Runs with their number of cases, artefacts and whether signed masses exist, newest first."""
    return _read(ref, queries.runs)


@st.cache_data(max_entries=16, show_spinner=False)
def build_status(ref: StoreRef) -> pd.DataFrame:
    """The steps of a store built while it is read (the demo), in order; empty for other stores."""
    return _read(ref, queries.build_status)


@st.cache_data(max_entries=16, show_spinner=False)
def rois(ref: StoreRef) -> pd.DataFrame:
    """RoIs (roi_id, name, grp, color, is_class) ordered by id."""
    return _read(ref, queries.rois)


@st.cache_data(max_entries=16, show_spinner=False)
def analysis_settings(ref: StoreRef, run_id: str) -> dict:
    """The settings and score convention of the run's outlier analysis ({} when not stored)."""
    return _read(ref, queries.analysis_settings, run_id)


# --- cases ---------------------------------------------------------------------------------

@st.cache_resource(max_entries=16, show_spinner=False)
def _run_case_ids(path: str, signature: tuple[int, int, int], run_id: str) -> tuple[str, ...]:
    """The run's case ids, read once per store version (a scan of the run's matrix rows)."""
    return _read(StoreRef(path, signature), queries.run_case_ids, run_id)


def _members(ref: StoreRef, run_id: str) -> tuple[str, ...]:
    return _run_case_ids(ref.path, ref.signature, run_id)


@st.cache_data(max_entries=32, show_spinner=False)
def run_cases(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """All cases with results in a run (the filter's options come from these)."""
    return cohort_cases(ref, run_id, CohortFilter())


@st.cache_data(max_entries=16, show_spinner=False)
def field_catalog(ref: StoreRef) -> pd.DataFrame:
    """The store's metadata fields: name, kind, source, n_cases, n_values."""
    return _read(ref, queries.field_catalog)


@st.cache_data(max_entries=32, show_spinner=False)
def run_fields(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """The metadata fields of a run's cases: case_id and one typed column per field."""
    return _read(ref, queries.case_fields, sorted(_members(ref, run_id)))


@st.cache_data(max_entries=64, show_spinner=False)
def cohort_cases(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """The run's cases passing the filter: case_id, dataset, split, sex, age, pathologies."""
    return _read(ref, queries.cohort_cases, run_id, cohort, members=_members(ref, run_id))


# --- importance matrices --------------------------------------------------------------------

@st.cache_data(max_entries=64, show_spinner=False)
def global_matrix(ref: StoreRef, run_id: str, cohort: CohortFilter, kind: str = "abs") -> pd.DataFrame:
    """Mean local matrix of the cohort, long form: target_id, source_id, mean, n, sd."""
    return _read(ref, queries.global_matrix, run_id, cohort, kind)


def global_matrix_spread(ref: StoreRef, run_id: str, cohort: CohortFilter, kind: str = "abs") -> pd.DataFrame:
    """Mean, standard deviation and count per cell over the cohort (the cached ``global_matrix`` frame)."""
    return global_matrix(ref, run_id, cohort, kind)


def local_cube(ref: StoreRef, run_id: str, case_ids: Sequence[str],
               kind: str = "abs") -> tuple[list[str], list[int], list[int], np.ndarray]:
    """Local matrices of the given cases as one array ``[cases, targets, sources]`` (NaN where missing).
    Not cached here: the caller caches what it computes from it (≈ 50 MB at 20,000 cases)."""
    return _read(ref, queries.local_cube, run_id, case_ids, kind)


@st.cache_data(max_entries=64, show_spinner=False)
def case_matrix(ref: StoreRef, run_id: str, case_id: str, kind: str = "abs") -> pd.DataFrame:
    """One case's local matrix, long form: target_id, source_id, value."""
    return _read(ref, queries.case_matrix, run_id, case_id, kind)


# --- distributions as box statistics ----------------------------------------------------------

@st.cache_data(max_entries=32, show_spinner=False)
def source_distribution(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int,
                        kind: str = "abs") -> Distribution:
    """e_{b->a} over the cohort for every source b of target a; points with case metadata and Dice."""
    return _read(ref, queries.source_distribution, run_id, cohort, target_id, kind, points_per_side=POINTS_PER_SIDE)


@st.cache_data(max_entries=32, show_spinner=False)
def context_mass_distribution(ref: StoreRef, run_id: str, cohort: CohortFilter) -> Distribution:
    """Context mass 1 - e_{a->a} (absolute) per target and dataset."""
    return _read(ref, queries.context_mass_distribution, run_id, cohort, points_per_side=POINTS_PER_SIDE)


@st.cache_data(max_entries=32, show_spinner=False)
def dice_distribution(ref: StoreRef, run_id: str, cohort: CohortFilter) -> Distribution:
    """Dice (of the run's model) per class over the cohort's cases."""
    return _read(ref, queries.dice_distribution, run_id, cohort, members=_members(ref, run_id),
                 points_per_side=POINTS_PER_SIDE)


# --- outliers ------------------------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def anomaly_targets(ref: StoreRef, run_id: str) -> list[int]:
    """Targets that have anomaly scores in the run (AVERAGE_TARGET: averaged over classes)."""
    return _read(ref, queries.anomaly_targets, run_id)


@st.cache_data(max_entries=32, show_spinner=False)
def anomaly_ranking(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int) -> pd.DataFrame:
    """Cohort cases ranked by anomaly score for one target, with Dice and metadata."""
    return _read(ref, queries.anomaly_ranking, run_id, cohort, target_id)


@st.cache_data(max_entries=16, show_spinner=False)
def anomaly_dice(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Spearman anomaly-vs-Dice per target (as analysed on the whole run)."""
    return _read(ref, queries.anomaly_dice, run_id)


@st.cache_data(max_entries=16, show_spinner=False)
def outlier_tests(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Inlier-vs-outlier tests per target and variable (sex, age)."""
    return _read(ref, queries.outlier_tests, run_id)


@st.cache_data(max_entries=64, show_spinner=False)
def outlier_reasons(ref: StoreRef, run_id: str, case_id: str, target_id: int, limit: int = 8) -> pd.DataFrame:
    """The cells that push one case's anomaly score for one class most (AVERAGE_TARGET: over every class)."""
    return _read(ref, queries.outlier_reasons, run_id, case_id, target_id, limit)


# --- attribution-method evaluation ------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def method_eval_summary(ref: StoreRef, run_ids: tuple[str, ...], cohort: CohortFilter) -> pd.DataFrame:
    """Per run, dataset and metric over the cohort's evaluated (case, target) pairs."""
    return _read(ref, queries.method_eval_summary, run_ids, cohort)


@st.cache_data(max_entries=16, show_spinner=False)
def perturbation_summary(ref: StoreRef, run_ids: tuple[str, ...], cohort: CohortFilter) -> pd.DataFrame:
    """MoRF/LeRF curves, normalised per (case, class): median and IQR per run, ordering and step."""
    return _read(ref, queries.perturbation_summary, run_ids, cohort)


@st.cache_data(max_entries=16, show_spinner=False)
def evaluated_case_count(ref: StoreRef, run_ids: tuple[str, ...]) -> int:
    """Distinct cases with evaluation rows in any of the runs (before the cohort filter)."""
    return _read(ref, queries.evaluated_case_count, run_ids)


@st.cache_data(max_entries=16, show_spinner=False)
def evaluated_runs(ref: StoreRef) -> list[str]:
    """Runs that have method_eval or perturbation_curve rows."""
    return _read(ref, queries.evaluated_runs)


@st.cache_data(max_entries=16, show_spinner=False)
def sanity_runs(ref: StoreRef) -> list[str]:
    """Runs with sanity checks."""
    return _read(ref, queries.sanity_runs)


@st.cache_data(max_entries=16, show_spinner=False)
def sanity_curves(ref: StoreRef, metric: str) -> pd.DataFrame:
    """Randomisation curves of every run for a similarity metric (mean over cases and classes, baseline range)."""
    return _read(ref, queries.sanity_curves, metric)


@st.cache_data(max_entries=16, show_spinner=False)
def sanity_verdicts(ref: StoreRef, metric: str) -> pd.DataFrame:
    """Per run, class and check: the deciding similarity, its baseline and whether the class passed."""
    return _read(ref, queries.sanity_verdicts, metric)


# --- artefacts --------------------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def artifact_cases(ref: StoreRef, run_id: str) -> dict[str, str]:
    """case_id -> artefact path (relative to the store's folder) for a run."""
    return _read(ref, queries.artifact_paths, run_id)


def resolve_artifact(ref: StoreRef, relative: str, run_id: str | None = None) -> Path | None:
    """Absolute path of an artefact, only if it exists inside the store's folder, or inside the run's
    recorded artefact root (``--data-dir``) where the operator allowed that root (``config.artifact_roots``)."""
    if not relative:
        return None
    path = (ref.folder.resolve() / relative).resolve()
    allowed = [ref.folder] + [root for root in [artifact_root_of(ref, run_id)]
                              if root is not None and artifacts.inside(root, config.artifact_roots())]
    return path if artifacts.inside(path, allowed) and path.is_file() else None


@st.cache_data(max_entries=16, show_spinner=False)
def artifact_root_of(ref: StoreRef, run_id: str | None) -> Path | None:
    """Where the run's artefacts were written (recorded by precompute), None for older stores."""
    if run_id is None:
        return None
    return _read(ref, artifacts.artifact_root, run_id)


@st.cache_data(max_entries=8, show_spinner=False)
def load_artifact(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    """All arrays of one npz artefact, validated (``ArtifactUnreadable`` for a truncated or foreign
    file); ``mtime_ns`` keys the cache to the file's version."""
    return artifacts.read_artifact(path)


# --- causal runs ------------------------------------------------------------------------------

@st.cache_data(max_entries=32, show_spinner=False)
def causal_summary(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """Per target and source over the cohort: mean ATE, std and n of cases, mean per-case SE."""
    return _read(ref, queries.causal_summary, run_id, cohort, members=_members(ref, run_id))


@st.cache_data(max_entries=32, show_spinner=False)
def causal_target_values(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int) -> pd.DataFrame:
    """Every case's effects on one target: case_id, source_id, ate, se, n, dataset."""
    return _read(ref, queries.causal_target_values, run_id, cohort, target_id, members=_members(ref, run_id))


@st.cache_data(max_entries=64, show_spinner=False)
def causal_case(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's effects: target_id, source_id, ate, se, n."""
    return _read(ref, queries.causal_case, run_id, case_id)


@st.cache_data(max_entries=32, show_spinner=False)
def component_effects(ref: StoreRef, run_id: str, cohort: CohortFilter, case_id: str | None = None
                      ) -> pd.DataFrame:
    """Component effects per target and component: mean ATE, std, n cases, mean SE (one case or the cohort)."""
    return _read(ref, queries.component_effects, run_id, cohort, case_id, members=_members(ref, run_id))


@st.cache_data(max_entries=32, show_spinner=False)
def relevance_masks(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """A case's relevance masks: target_id, share, n_units, n_voxels, dice_keep, dice_remove."""
    return _read(ref, queries.relevance_masks, run_id, case_id)


# --- analyses beyond the paper -----------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def drift_tests(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Per dataset and class: energy statistic, p, q (BH), n_ref, n_new, reference dataset."""
    return _read(ref, queries.drift_tests, run_id)


@st.cache_data(max_entries=32, show_spinner=False)
def drift_cells(ref: StoreRef, run_id: str, dataset: str, limit: int = 30) -> pd.DataFrame:
    """The cells that moved most (by |Hedges' g| among q < 0.05 first) for one dataset."""
    return _read(ref, queries.drift_cells, run_id, dataset, limit)


@st.cache_data(max_entries=32, show_spinner=False)
def drift_cases(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int, limit: int = 25) -> pd.DataFrame:
    """The cohort's cases that drift most for one class (AVERAGE_TARGET: averaged over classes)."""
    return _read(ref, queries.drift_cases, run_id, cohort, target_id, limit)


@st.cache_data(max_entries=32, show_spinner=False)
def dice_estimates(ref: StoreRef, run_id: str, class_id: int) -> pd.DataFrame:
    """Expected Dice of every case of the run for one class (AVERAGE_TARGET: the mean over classes)."""
    return _read(ref, queries.dice_estimates, run_id, class_id)


@st.cache_data(max_entries=64, show_spinner=False)
def case_dice_estimates(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's expected Dice per class (and AVERAGE_TARGET) beside its true Dice where known."""
    return _read(ref, queries.case_dice_estimates, run_id, case_id)


@st.cache_data(max_entries=16, show_spinner=False)
def dice_estimate_quality(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """How well the estimate did where the truth is known: scope, metric, value, n."""
    return _read(ref, queries.dice_estimate_quality, run_id)


@st.cache_data(max_entries=64, show_spinner=False)
def stored_intervals(ref: StoreRef, run_id: str, cohort_name: str, kind: str) -> pd.DataFrame:
    """Bootstrap intervals the analysis stored for a cohort (``*`` or a dataset) and kind."""
    return _read(ref, queries.stored_intervals, run_id, cohort_name, kind)


@st.cache_data(max_entries=64, show_spinner=False)
def sampling_noise(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's SmoothGrad sampling noise per cell and kind: SE, interval, noise samples behind it."""
    return _read(ref, queries.sampling_noise, run_id, case_id)


@st.cache_data(max_entries=16, show_spinner=False)
def retest_icc(ref: StoreRef, run_id: str, factor: str) -> pd.DataFrame:
    """The run's test-retest ICC per cell across repeats of ``factor``: kind, target_id, source_id, icc, n."""
    return _read(ref, queries.retest_icc, run_id, factor)


@st.cache_data(max_entries=16, show_spinner=False)
def method_agreement(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Agreement of the run with the other runs over the same cases, per class (AVERAGE_TARGET: pooled)."""
    return _read(ref, queries.method_agreement, run_id)


@st.cache_data(max_entries=32, show_spinner=False)
def method_disagreement(ref: StoreRef, run_id: str, other_run_id: str, limit: int = 20) -> pd.DataFrame:
    """The cells where two runs differ most on the same cases."""
    return _read(ref, queries.method_disagreement, run_id, other_run_id, limit)


@st.cache_data(max_entries=16, show_spinner=False)
def paper_parity(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """The paper's Table 2 beside this run's Spearman rho per class."""
    return _read(ref, queries.paper_parity, run_id)


# --- failure slices ------------------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def failure_slices(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """The run's failure slices, by class and rank."""
    return _read(ref, queries.failure_slices, run_id)


@st.cache_data(max_entries=32, show_spinner=False)
def failure_slice_detail(ref: StoreRef, run_id: str, slice_id: int) -> dict[str, pd.DataFrame]:
    """A slice's members, Dice in and out, differing cells and its members' outlier reasons."""
    return {name: _read(ref, read, run_id, slice_id) for name, read in (
        ("members", queries.failure_slice_members), ("dice", queries.failure_slice_dice),
        ("cells", queries.failure_slice_cells), ("reasons", queries.failure_slice_reasons))}
