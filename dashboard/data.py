"""All reads of the DuckDB store: one cached read-only connection, parameterised SQL, cached queries.

The writer publishes a new store by atomic rename (``agg2exp_core.store.publish``), so
a store is identified here by its path *and* its file signature (inode, mtime, size):
when the file is replaced, the signature changes, a new connection is opened and every
cached query (all keyed on the ``StoreRef``) is recomputed. DuckDB shares one database
instance per path within a process, which would keep showing the replaced file; the
connection therefore attaches the file read-only to a private in-memory database.

Every value from the user travels as a ``?`` parameter; the only SQL text that varies
is chosen from fixed fragments (``KIND_COLUMNS``, ``filters.where_clause``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

from dashboard.filters import CohortFilter, where_clause

KIND_COLUMNS = {"abs": "mass_abs", "pos": "mass_pos", "neg": "mass_neg"}
KIND_LABELS = {"abs": "absolute mass", "pos": "positive mass", "neg": "negative mass"}
AVERAGE_TARGET = -1     # anomaly.target_id of the score averaged over classes


@dataclass(frozen=True)
class StoreRef:
    """A published store file as seen now: path plus (inode, mtime_ns, size)."""

    path: str
    signature: tuple[int, int, int]

    @property
    def folder(self) -> Path:
        return Path(self.path).parent

    @property
    def name(self) -> str:
        return Path(self.path).name


def store_ref(path: str | Path) -> StoreRef | None:
    """The current state of a store file, or None when there is no such file."""
    path = Path(path).expanduser().resolve()
    try:
        info = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return StoreRef(str(path), (info.st_ino, info.st_mtime_ns, info.st_size))


@st.cache_resource(max_entries=4, show_spinner=False)
def _connection(path: str, signature: tuple[int, int, int]) -> duckdb.DuckDBPyConnection:
    """Read-only connection to one published version of a store (cached per signature)."""
    con = duckdb.connect(":memory:")
    con.execute("ATTACH ? AS store (READ_ONLY)", [path])
    return con


def query(ref: StoreRef, sql: str, params: list | tuple = ()) -> pd.DataFrame:
    """Run one parameterised query on its own cursor (connections are shared between sessions)."""
    cursor = _connection(ref.path, ref.signature).cursor()
    try:
        cursor.execute("USE store")
        return cursor.execute(sql, list(params)).df()
    finally:
        cursor.close()


def _column(kind: str) -> str:
    if kind not in KIND_COLUMNS:
        raise ValueError(f"unknown mass kind {kind!r}")
    return KIND_COLUMNS[kind]


def _cohort_cte(run_id: str, cohort: CohortFilter) -> tuple[str, list]:
    """``WITH cohort AS (...)``: the run's cases that pass the filter."""
    condition, params = where_clause(cohort, "c")
    sql = (f"WITH cohort AS (SELECT c.* FROM cases c WHERE c.case_id IN "
           f"(SELECT case_id FROM case_status WHERE run_id = ? UNION "
           f"SELECT DISTINCT case_id FROM local_importance WHERE run_id = ?) AND {condition}) ")
    return sql, [run_id, run_id] + params


# --- store-level tables ------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def table_names(ref: StoreRef) -> frozenset[str]:
    frame = query(ref, "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store'")
    return frozenset(frame.table_name)


# Every table the dashboard reads (all created by agg2exp_core.store.init_schema).
REQUIRED_TABLES = frozenset({"cases", "rois", "runs", "case_status", "local_importance", "dice", "artifacts",
                             "failures", "anomaly", "anomaly_dice", "outlier_tests", "method_eval",
                             "perturbation_curve"})


@st.cache_data(max_entries=16, show_spinner=False)
def runs(ref: StoreRef) -> pd.DataFrame:
    """Runs with their number of cases, artefacts and whether signed masses exist, newest first."""
    frame = query(ref, """
        SELECT r.run_id, r.method, CAST(r.params AS VARCHAR) AS params, r.model_sha256,
               CAST(r.label_names AS VARCHAR) AS label_names, r.code_version, r.source, r.description,
               r.created_at,
               coalesce(li.n_cases, 0) AS n_cases, coalesce(li.has_signed, FALSE) AS has_signed,
               coalesce(a.n_artifacts, 0) AS n_artifacts, coalesce(f.n_failures, 0) AS n_failures
        FROM runs r
        LEFT JOIN (SELECT run_id, count(DISTINCT case_id) AS n_cases, count(mass_pos) > 0 AS has_signed
                   FROM local_importance GROUP BY run_id) li USING (run_id)
        LEFT JOIN (SELECT run_id, count(*) AS n_artifacts FROM artifacts GROUP BY run_id) a USING (run_id)
        LEFT JOIN (SELECT run_id, count(*) AS n_failures FROM failures GROUP BY run_id) f USING (run_id)
        ORDER BY r.created_at DESC NULLS LAST, r.run_id""")
    frame["params"] = frame["params"].map(_json_or_empty)
    frame["label_names"] = frame["label_names"].map(lambda s: _json_or_empty(s) or [])
    return frame


def _json_or_empty(text):
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return {}
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


@st.cache_data(max_entries=16, show_spinner=False)
def rois(ref: StoreRef) -> pd.DataFrame:
    """RoIs (roi_id, name, grp, color, is_class) ordered by id."""
    return query(ref, "SELECT roi_id, name, grp, color, is_class FROM rois ORDER BY roi_id")


# --- cases ---------------------------------------------------------------------------------

@st.cache_data(max_entries=32, show_spinner=False)
def run_cases(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """All cases with results in a run (the filter's options come from these)."""
    return cohort_cases(ref, run_id, CohortFilter())


@st.cache_data(max_entries=64, show_spinner=False)
def cohort_cases(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """The run's cases passing the filter: case_id, dataset, split, sex, age, pathologies."""
    cte, params = _cohort_cte(run_id, cohort)
    frame = query(ref, cte + "SELECT case_id, dataset, split, sex, age, coalesce(pathologies, '') AS pathologies "
                             "FROM cohort ORDER BY case_id", params)
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    return frame


# --- importance matrices --------------------------------------------------------------------

@st.cache_data(max_entries=64, show_spinner=False)
def global_matrix(ref: StoreRef, run_id: str, cohort: CohortFilter, kind: str = "abs") -> pd.DataFrame:
    """Mean local matrix of the cohort, long form: target_id, source_id, mean, std, n (non-NULL cases)."""
    column = _column(kind)
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + f"""
        SELECT li.target_id, li.source_id, avg(li.{column}) AS mean, stddev_samp(li.{column}) AS std,
               count(li.{column}) AS n
        FROM local_importance li JOIN cohort USING (case_id)
        WHERE li.run_id = ? GROUP BY li.target_id, li.source_id ORDER BY 1, 2""", params + [run_id])


@st.cache_data(max_entries=16, show_spinner=False)
def local_values(ref: StoreRef, run_id: str, cohort: CohortFilter, kind: str = "abs") -> pd.DataFrame:
    """Every local value of the cohort, long form: case_id, target_id, source_id, value."""
    column = _column(kind)
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + f"""
        SELECT li.case_id, li.target_id, li.source_id, li.{column} AS value
        FROM local_importance li JOIN cohort USING (case_id) WHERE li.run_id = ?""", params + [run_id])


@st.cache_data(max_entries=32, show_spinner=False)
def target_values(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int,
                  kind: str = "abs") -> pd.DataFrame:
    """Values e_{b->a} of one target a over the cohort with case metadata and the target's Dice."""
    column = _column(kind)
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + f"""
        SELECT li.case_id, li.source_id, li.{column} AS value, c.dataset, c.split, c.sex, c.age,
               c.pathologies, d.dice
        FROM local_importance li JOIN cohort c USING (case_id)
        LEFT JOIN dice d ON d.case_id = li.case_id AND d.class_id = li.target_id
             AND d.model_sha256 = (SELECT model_sha256 FROM runs WHERE run_id = ?)
        WHERE li.run_id = ? AND li.target_id = ? ORDER BY li.source_id, li.case_id""",
                 params + [run_id, run_id, int(target_id)])


@st.cache_data(max_entries=32, show_spinner=False)
def self_mass(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """e_{a->a} (absolute) per case and target with the case's dataset, sex and age."""
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + """
        SELECT li.case_id, li.target_id, li.mass_abs AS self_mass, c.dataset, c.sex, c.age
        FROM local_importance li JOIN cohort c USING (case_id)
        WHERE li.run_id = ? AND li.target_id = li.source_id ORDER BY li.target_id, li.case_id""",
                 params + [run_id])


@st.cache_data(max_entries=64, show_spinner=False)
def case_matrix(ref: StoreRef, run_id: str, case_id: str, kind: str = "abs") -> pd.DataFrame:
    """One case's local matrix, long form: target_id, source_id, value."""
    column = _column(kind)
    return query(ref, f"SELECT target_id, source_id, {column} AS value FROM local_importance "
                      "WHERE run_id = ? AND case_id = ? ORDER BY 1, 2", [run_id, case_id])


# --- Dice, outliers --------------------------------------------------------------------------

@st.cache_data(max_entries=32, show_spinner=False)
def dice(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """Dice per cohort case and class (of the run's model): case_id, class_id, dice."""
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + """
        SELECT d.case_id, d.class_id, d.dice FROM dice d JOIN cohort USING (case_id)
        WHERE d.model_sha256 = (SELECT model_sha256 FROM runs WHERE run_id = ?)""", params + [run_id])


@st.cache_data(max_entries=16, show_spinner=False)
def anomaly_targets(ref: StoreRef, run_id: str) -> list[int]:
    """Targets that have anomaly scores in the run (-1: averaged over classes)."""
    return query(ref, "SELECT DISTINCT target_id FROM anomaly WHERE run_id = ? ORDER BY 1",
                 [run_id]).target_id.astype(int).tolist()


@st.cache_data(max_entries=32, show_spinner=False)
def anomaly_ranking(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int) -> pd.DataFrame:
    """Cohort cases ranked by anomaly score for one target, with Dice and metadata."""
    cte, params = _cohort_cte(run_id, cohort)
    dice_of_case = ("(SELECT avg(d.dice) FROM dice d WHERE d.case_id = a.case_id AND d.model_sha256 = m.sha)"
                    if int(target_id) == AVERAGE_TARGET else
                    "(SELECT d.dice FROM dice d WHERE d.case_id = a.case_id AND d.class_id = a.target_id "
                    "AND d.model_sha256 = m.sha)")
    frame = query(ref, cte + f"""
        , m AS (SELECT model_sha256 AS sha FROM runs WHERE run_id = ?)
        SELECT a.case_id, a.score, a.is_outlier, {dice_of_case} AS dice, c.sex, c.age, c.dataset, c.split,
               c.pathologies
        FROM anomaly a JOIN cohort c USING (case_id), m
        WHERE a.run_id = ? AND a.target_id = ? ORDER BY a.score DESC, a.case_id""",
                  params + [run_id, run_id, int(target_id)])
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


@st.cache_data(max_entries=16, show_spinner=False)
def anomaly_dice(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Spearman anomaly-vs-Dice per target (as analysed on the whole run)."""
    return query(ref, "SELECT target_id, spearman_rho, p_value, n FROM anomaly_dice WHERE run_id = ? "
                      "ORDER BY target_id", [run_id])


@st.cache_data(max_entries=16, show_spinner=False)
def outlier_tests(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Inlier-vs-outlier tests per target and variable (sex, age)."""
    return query(ref, "SELECT target_id, variable, test, statistic, p_value, n_inliers, n_outliers "
                      "FROM outlier_tests WHERE run_id = ? ORDER BY target_id, variable", [run_id])


# --- attribution-method evaluation ------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def method_eval_summary(ref: StoreRef, run_ids: tuple[str, ...], cohort: CohortFilter) -> pd.DataFrame:
    """Mean, std and n of each metric per run and dataset over the cohort's (case, target) pairs."""
    frames = []
    for run_id in run_ids:
        cte, params = _cohort_cte(run_id, cohort)
        frames.append(query(ref, cte + """
            SELECT e.run_id, c.dataset, e.metric, avg(e.value) AS mean, stddev_samp(e.value) AS std,
                   count(e.value) AS n
            FROM method_eval e JOIN cohort c USING (case_id) WHERE e.run_id = ?
            GROUP BY e.run_id, c.dataset, e.metric""", params + [run_id]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@st.cache_data(max_entries=16, show_spinner=False)
def perturbation_summary(ref: StoreRef, run_ids: tuple[str, ...], cohort: CohortFilter) -> pd.DataFrame:
    """MoRF/LeRF curves: median and IQR of the value per run, ordering and step over the cohort."""
    frames = []
    for run_id in run_ids:
        cte, params = _cohort_cte(run_id, cohort)
        frames.append(query(ref, cte + """
            SELECT p.run_id, lower(p.ordering) AS ordering, p.step, avg(p.fraction) AS fraction,
                   median(p.value) AS median, quantile_cont(p.value, 0.25) AS q25,
                   quantile_cont(p.value, 0.75) AS q75, count(p.value) AS n
            FROM perturbation_curve p JOIN cohort c USING (case_id) WHERE p.run_id = ?
            GROUP BY p.run_id, lower(p.ordering), p.step ORDER BY 1, 2, 3""", params + [run_id]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@st.cache_data(max_entries=16, show_spinner=False)
def evaluated_runs(ref: StoreRef) -> list[str]:
    """Runs that have method_eval or perturbation_curve rows."""
    frame = query(ref, "SELECT DISTINCT run_id FROM method_eval UNION SELECT DISTINCT run_id FROM perturbation_curve")
    return sorted(frame.run_id.tolist())


# --- artefacts --------------------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def artifact_cases(ref: StoreRef, run_id: str) -> dict[str, str]:
    """case_id -> artefact path (relative to the store's folder) for a run."""
    frame = query(ref, "SELECT case_id, path FROM artifacts WHERE run_id = ? ORDER BY case_id", [run_id])
    return dict(zip(frame.case_id, frame.path))


def resolve_artifact(ref: StoreRef, relative: str) -> Path | None:
    """Absolute path of an artefact, only if it lies inside the store's folder and exists."""
    if not relative:
        return None
    folder = ref.folder.resolve()
    path = (folder / relative).resolve()
    if folder != path and folder not in path.parents:
        return None
    return path if path.is_file() else None


@st.cache_data(max_entries=8, show_spinner=False)
def load_artifact(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    """All arrays of one npz artefact (``mtime_ns`` keys the cache to the file's version)."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


# --- causal runs (tables older stores lack: empty frames there) ---------------------------------

def _has(ref: StoreRef, table: str) -> bool:
    """Whether the store has a table that older stores lack (the causal tables)."""
    return table in table_names(ref)

@st.cache_data(max_entries=32, show_spinner=False)
def causal_summary(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """Per target and source over the cohort: mean ATE, std and n of cases, mean per-case SE."""
    if not _has(ref, "causal_effect"):
        return pd.DataFrame(columns=["target_id", "source_id", "mean", "std", "n", "mean_se"])
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + """
        SELECT e.target_id, e.source_id, avg(e.ate) AS mean, stddev_samp(e.ate) AS std, count(e.ate) AS n,
               avg(e.se) AS mean_se
        FROM causal_effect e JOIN cohort USING (case_id) WHERE e.run_id = ?
        GROUP BY e.target_id, e.source_id ORDER BY 1, 2""", params + [run_id])


@st.cache_data(max_entries=32, show_spinner=False)
def causal_target_values(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int) -> pd.DataFrame:
    """Every case's effects on one target: case_id, source_id, ate, se, n, dataset."""
    if not _has(ref, "causal_effect"):
        return pd.DataFrame(columns=["case_id", "source_id", "ate", "se", "n", "dataset"])
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + """
        SELECT e.case_id, e.source_id, e.ate, e.se, e.n, c.dataset
        FROM causal_effect e JOIN cohort c USING (case_id) WHERE e.run_id = ? AND e.target_id = ?
        ORDER BY e.source_id, e.case_id""", params + [run_id, int(target_id)])


@st.cache_data(max_entries=64, show_spinner=False)
def causal_case(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's effects: target_id, source_id, ate, se, n."""
    if not _has(ref, "causal_effect"):
        return pd.DataFrame(columns=["target_id", "source_id", "ate", "se", "n"])
    return query(ref, "SELECT target_id, source_id, ate, se, n FROM causal_effect "
                           "WHERE run_id = ? AND case_id = ? ORDER BY 1, 2", [run_id, case_id])


@st.cache_data(max_entries=32, show_spinner=False)
def component_effects(ref: StoreRef, run_id: str, cohort: CohortFilter, case_id: str | None = None
                      ) -> pd.DataFrame:
    """Component effects per target and component: mean ATE, std, n cases, mean SE (one case or the cohort)."""
    if not _has(ref, "component_effect"):
        return pd.DataFrame(columns=["target_id", "component", "position", "mean", "std", "n", "mean_se"])
    cte, params = _cohort_cte(run_id, cohort)
    return query(ref, cte + """
        SELECT e.target_id, e.component, min(e.position) AS position, avg(e.ate) AS mean,
               stddev_samp(e.ate) AS std, count(e.ate) AS n, avg(e.se) AS mean_se
        FROM component_effect e JOIN cohort USING (case_id)
        WHERE e.run_id = ? AND (CAST(? AS VARCHAR) IS NULL OR e.case_id = ?)
        GROUP BY e.target_id, e.component ORDER BY 1, 3""", params + [run_id, case_id, case_id])


@st.cache_data(max_entries=32, show_spinner=False)
def relevance_masks(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """A case's relevance masks: target_id, share, n_units, n_voxels, dice_keep, dice_remove."""
    if not _has(ref, "relevance_mask"):
        return pd.DataFrame(columns=["target_id", "share", "n_units", "n_voxels", "dice_keep", "dice_remove"])
    return query(ref, "SELECT target_id, share, n_units, n_voxels, dice_keep, dice_remove "
                           "FROM relevance_mask WHERE run_id = ? AND case_id = ? ORDER BY 1", [run_id, case_id])
