"""All reads of the DuckDB store: one cached read-only connection, parameterised SQL, cached queries.

The writer publishes a new store by atomic rename (``agg2exp_core.store.publish``), so
a store is identified here by its path *and* its file signature (inode, mtime, size):
when the file is replaced, the signature changes, a new connection is opened and every
cached query (all keyed on the ``StoreRef``) is recomputed. DuckDB shares one database
instance per path within a process, which would keep showing the replaced file; the
connection therefore attaches the file read-only to a private in-memory database.

Every value from the user travels as a ``?`` parameter; the only SQL text that varies
is chosen from fixed fragments (the mass columns of ``vocabulary.MASS_KINDS``,
``filters.where_clause``, the value and group fragments of ``_BOXES``).

Cohorts of 20,000 cases hold ≈ 6.5 M matrix rows per run, so every aggregate is a
GROUP BY in DuckDB that returns a small frame (a matrix, box statistics, the points
outside the whiskers), never the long rows themselves; only the permutation test reads
per-case matrices, as one numpy array (``local_cube``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

from agg2exp_core.vocabulary import AVERAGE_TARGET, MASS_KINDS
from dashboard.filters import CohortFilter, where_clause


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


def query(ref: StoreRef, sql: str, params: list | tuple = (), numpy: bool = False) -> pd.DataFrame | dict:
    """Run one parameterised query on its own cursor (connections are shared between sessions).

    ``numpy=True`` returns the columns as numpy arrays (DuckDB's ``fetchnumpy``, no frame).
    """
    cursor = _connection(ref.path, ref.signature).cursor()
    try:
        cursor.execute("USE store")
        result = cursor.execute(sql, list(params))
        return result.fetchnumpy() if numpy else result.df()
    finally:
        cursor.close()


def _column(kind: str) -> str:
    if kind not in MASS_KINDS:
        raise ValueError(f"unknown mass kind {kind!r}")
    return MASS_KINDS[kind]


# The cases a run has results for: finished (case_status) or with matrix rows (imports).
_RUN_CASES = ("SELECT case_id FROM case_status WHERE run_id = ? UNION "
              "SELECT DISTINCT case_id FROM local_importance WHERE run_id = ?")


def _run_rows(run_id: str, cohort: CohortFilter) -> tuple[str, list]:
    """``FROM local_importance li JOIN cases c ... WHERE ...``: a run's matrix rows of the cohort's cases.

    Matrix rows exist only for the run's own cases, so joining the cases table is the whole
    cohort filter (no membership sub-query, which would scan the run's rows a second time).
    """
    condition, params = where_clause(cohort, "c")
    return (f"FROM local_importance li JOIN cases c USING (case_id) WHERE li.run_id = ? AND {condition}",
            [run_id] + params)


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
    """Runs with their number of cases, artefacts and whether signed masses and the volume-adjusted
    mass (lift) exist, newest first."""
    # a store written before the lift existed has no mass_lift column (it is read-only here)
    details = "count(mass_lift) > 0" if _has_column(ref, "local_importance", "mass_lift") else "FALSE"  # fixed
    frame = query(ref, f"""
        SELECT r.run_id, r.method, CAST(r.params AS VARCHAR) AS params, r.model_sha256,
               CAST(r.label_names AS VARCHAR) AS label_names, r.code_version, r.source, r.description,
               r.created_at,
               coalesce(li.n_cases, 0) AS n_cases, coalesce(li.has_signed, FALSE) AS has_signed,
               coalesce(li.has_lift, FALSE) AS has_lift,
               coalesce(a.n_artifacts, 0) AS n_artifacts, coalesce(f.n_failures, 0) AS n_failures
        FROM runs r
        LEFT JOIN (SELECT run_id, count(DISTINCT case_id) AS n_cases, count(mass_pos) > 0 AS has_signed,
                          {details} AS has_lift
                   FROM local_importance GROUP BY run_id) li USING (run_id)
        LEFT JOIN (SELECT run_id, count(*) AS n_artifacts FROM artifacts GROUP BY run_id) a USING (run_id)
        LEFT JOIN (SELECT run_id, count(*) AS n_failures FROM failures GROUP BY run_id) f USING (run_id)
        ORDER BY r.created_at DESC NULLS LAST, r.run_id""")
    frame["params"] = frame["params"].map(_json_or_empty)
    frame["label_names"] = frame["label_names"].map(lambda s: _json_or_empty(s) or [])
    return frame


def _has_column(ref: StoreRef, table: str, column: str) -> bool:
    return bool(query(ref, "SELECT count(*) AS n FROM duckdb_columns() WHERE table_name = ? AND column_name = ? "
                           "AND database_name = current_database()", [table, column]).n.iloc[0])


def _json_or_empty(text):
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return {}
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


_BUILD_COLUMNS = ["step", "title", "state", "done", "total", "unit", "remaining_s", "run_id", "updated_at"]


@st.cache_data(max_entries=16, show_spinner=False)
def build_status(ref: StoreRef) -> pd.DataFrame:
    """The steps of a store built while it is read (the demo), in order; empty for other stores."""
    if "build_status" not in table_names(ref):
        return pd.DataFrame(columns=_BUILD_COLUMNS)
    return query(ref, "SELECT step, title, state, done, total, unit, remaining_s, run_id, updated_at "
                      "FROM build_status ORDER BY position, step")


@st.cache_data(max_entries=16, show_spinner=False)
def rois(ref: StoreRef) -> pd.DataFrame:
    """RoIs (roi_id, name, grp, color, is_class) ordered by id."""
    return query(ref, "SELECT roi_id, name, grp, color, is_class FROM rois ORDER BY roi_id")


# --- cases ---------------------------------------------------------------------------------

@st.cache_resource(max_entries=16, show_spinner=False)
def _run_case_ids(path: str, signature: tuple[int, int, int], run_id: str) -> tuple[str, ...]:
    """The run's case ids, read once per store version (a scan of the run's matrix rows)."""
    frame = query(StoreRef(path, signature), _RUN_CASES + " ORDER BY 1", [run_id, run_id])
    return tuple(frame.case_id)


def _members(ref: StoreRef, run_id: str) -> list[str]:
    """The run's case ids as one list parameter (``c.case_id IN (SELECT unnest(?::VARCHAR[]))``)."""
    return list(_run_case_ids(ref.path, ref.signature, run_id))


@st.cache_data(max_entries=32, show_spinner=False)
def run_cases(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """All cases with results in a run (the filter's options come from these)."""
    return cohort_cases(ref, run_id, CohortFilter())


@st.cache_data(max_entries=64, show_spinner=False)
def cohort_cases(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """The run's cases passing the filter: case_id, dataset, split, sex, age, pathologies."""
    condition, params = where_clause(cohort, "c")
    frame = query(ref, f"""
        SELECT case_id, dataset, split, sex, age, coalesce(pathologies, '') AS pathologies FROM cases c
        WHERE c.case_id IN (SELECT unnest(?::VARCHAR[])) AND {condition} ORDER BY case_id""",
                  [_members(ref, run_id)] + params)
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    return frame


# --- importance matrices --------------------------------------------------------------------

@st.cache_data(max_entries=64, show_spinner=False)
def global_matrix(ref: StoreRef, run_id: str, cohort: CohortFilter, kind: str = "abs") -> pd.DataFrame:
    """Mean local matrix of the cohort, long form: target_id, source_id, mean, n (non-NULL cases), sd
    (the standard deviation over the cases, for intervals of large cohorts; same scan)."""
    column = _column(kind)
    rows, params = _run_rows(run_id, cohort)
    return query(ref, f"""
        SELECT li.target_id, li.source_id, avg(li.{column}) AS mean, count(li.{column}) AS n,
               stddev_samp(li.{column}) AS sd
        {rows} GROUP BY li.target_id, li.source_id ORDER BY 1, 2""", params)


def local_cube(ref: StoreRef, run_id: str, case_ids: Sequence[str],
               kind: str = "abs") -> tuple[list[str], list[int], list[int], np.ndarray]:
    """Local matrices of the given cases as one array ``[cases, targets, sources]`` (NaN where missing).

    Read with ``fetchnumpy`` (integer positions, no strings per row) and scattered into
    place; cases without rows in the run are left out. Not cached here: the caller caches
    what it computes from it (it is ≈ 50 MB at 20,000 cases).
    """
    column = _column(kind)
    ids = sorted(set(map(str, case_ids)))
    result = query(ref, f"""
        WITH chosen AS (SELECT unnest(?::VARCHAR[]) AS case_id, unnest(range(?)) AS position)
        SELECT chosen.position::INTEGER AS position, li.target_id, li.source_id, li.{column} AS value
        FROM local_importance li JOIN chosen USING (case_id) WHERE li.run_id = ?""",
                   [ids, len(ids), run_id], numpy=True)
    positions = np.asarray(result["position"], dtype=np.int64)
    if not len(positions):
        return [], [], [], np.zeros((0, 0, 0))
    target_ids, target_index = _dense_ids(np.asarray(result["target_id"]))
    source_ids, source_index = _dense_ids(np.asarray(result["source_id"]))
    values = np.ma.filled(np.ma.asarray(result["value"], dtype=float), np.nan)
    cube = np.full((len(ids), len(target_ids), len(source_ids)), np.nan)
    cube[positions, target_index, source_index] = values
    present = np.bincount(positions, minlength=len(ids)) > 0
    return [c for c, keep in zip(ids, present) if keep], target_ids, source_ids, cube[present]


def _dense_ids(ids: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(sorted distinct ids, index of each entry among them) for small non-negative integer ids."""
    ids = ids.astype(np.int64)
    distinct = np.flatnonzero(np.bincount(ids))
    lookup = np.zeros(int(distinct[-1]) + 1, dtype=np.int64)
    lookup[distinct] = np.arange(len(distinct))
    return distinct.tolist(), lookup[ids]


@st.cache_data(max_entries=64, show_spinner=False)
def case_matrix(ref: StoreRef, run_id: str, case_id: str, kind: str = "abs") -> pd.DataFrame:
    """One case's local matrix, long form: target_id, source_id, value."""
    column = _column(kind)
    return query(ref, f"SELECT target_id, source_id, {column} AS value FROM local_importance "
                      "WHERE run_id = ? AND case_id = ? ORDER BY 1, 2", [run_id, case_id])


# --- distributions as box statistics ----------------------------------------------------------
# A box plot of 20,000 cases is drawn from its statistics and the points outside its whiskers,
# both computed here in one pass over the cohort's rows. Tukey's rule, as Plotly's
# ``boxpoints="outliers"``: the whiskers end at the most extreme values within 1.5 IQR of the
# quartiles; quartiles are DuckDB's ``quantile_cont`` (linear interpolation, as numpy's
# default). Skewed masses put thousands of cases outside the whiskers, so only the
# ``POINTS_PER_SIDE`` most extreme per box and side come back (``n_low``/``n_high`` count all).
# ``values`` (rows: group columns, value, case_id), ``groups`` and ``details`` are fixed SQL
# text of this module.
POINTS_PER_SIDE = 100


@dataclass(frozen=True)
class Distribution:
    """Box statistics per group and the cases drawn as points outside the whiskers."""

    boxes: pd.DataFrame     # groups, n, mean, q1, median, q3, lowerfence, upperfence, n_low, n_high
    points: pd.DataFrame    # groups, value, case_id (+ details)

    @property
    def n_outside(self) -> int:
        return int(self.boxes.n_low.sum() + self.boxes.n_high.sum()) if len(self.boxes) else 0


_BOX_COLUMNS = ["n", "mean", "q1", "median", "q3", "lowerfence", "upperfence", "n_low", "n_high"]


def _distribution(ref: StoreRef, values: str, groups: str, params: list, details: str = "SELECT * FROM points",
                  detail_params: list | tuple = ()) -> Distribution:
    frame = query(ref, f"""
        WITH v AS MATERIALIZED ({values}),
        f AS (SELECT {groups}, count(value) AS n, avg(value) AS mean, quantile_cont(value, [0.25, 0.5, 0.75]) AS q
              FROM v WHERE value IS NOT NULL AND NOT isnan(value) GROUP BY {groups}),
        marked AS (SELECT v.*, f.q[1] - 1.5 * (f.q[3] - f.q[1]) AS lo, f.q[3] + 1.5 * (f.q[3] - f.q[1]) AS hi
                   FROM v JOIN f USING ({groups})),
        w AS (SELECT {groups}, min(value) FILTER (WHERE value >= lo) AS lowerfence,
                     max(value) FILTER (WHERE value <= hi) AS upperfence,
                     count(*) FILTER (WHERE value < lo) AS n_low, count(*) FILTER (WHERE value > hi) AS n_high
              FROM marked GROUP BY {groups}),
        points AS (SELECT * EXCLUDE (lo, hi) FROM marked WHERE value < lo OR value > hi
                   QUALIFY row_number() OVER (PARTITION BY {groups}, value > hi
                                              ORDER BY CASE WHEN value > hi THEN -value ELSE value END, case_id) <= ?)
        SELECT 'box' AS part, {groups}, n, mean, q[1] AS q1, q[2] AS median, q[3] AS q3, lowerfence, upperfence,
               n_low, n_high
        FROM f JOIN w USING ({groups})
        UNION ALL BY NAME
        SELECT 'point' AS part, * FROM ({details})""", params + [POINTS_PER_SIDE] + list(detail_params))
    keys = [g.strip() for g in groups.split(",")]
    boxes = frame[frame.part == "box"]
    boxes = boxes[keys + _BOX_COLUMNS].astype({"n": int, "n_low": int, "n_high": int})
    points = frame[frame.part == "point"].drop(columns=["part"] + _BOX_COLUMNS)
    return Distribution(boxes.sort_values(keys).reset_index(drop=True),
                        points.sort_values(keys + ["value"]).reset_index(drop=True))


@st.cache_data(max_entries=32, show_spinner=False)
def source_distribution(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int,
                        kind: str = "abs") -> Distribution:
    """e_{b->a} over the cohort for every source b of target a; points with case metadata and Dice."""
    column = _column(kind)
    rows, params = _run_rows(run_id, cohort)
    details = """SELECT p.*, c.dataset, c.sex, c.age, c.pathologies, d.dice FROM points p JOIN cases c USING (case_id)
                 LEFT JOIN dice d ON d.case_id = p.case_id AND d.class_id = ?
                      AND d.model_sha256 = (SELECT model_sha256 FROM runs WHERE run_id = ?)"""
    return _distribution(ref, f"SELECT li.source_id, li.{column} AS value, li.case_id {rows} AND li.target_id = ?",
                         "source_id", params + [int(target_id)], details, [int(target_id), run_id])


@st.cache_data(max_entries=32, show_spinner=False)
def context_mass_distribution(ref: StoreRef, run_id: str, cohort: CohortFilter) -> Distribution:
    """Context mass 1 - e_{a->a} (absolute) per target and dataset."""
    rows, params = _run_rows(run_id, cohort)
    return _distribution(ref, f"SELECT li.target_id, c.dataset, 1 - li.mass_abs AS value, li.case_id {rows} "
                              "AND li.target_id = li.source_id", "target_id, dataset", params)


@st.cache_data(max_entries=32, show_spinner=False)
def dice_distribution(ref: StoreRef, run_id: str, cohort: CohortFilter) -> Distribution:
    """Dice (of the run's model) per class over the cohort's cases."""
    condition, params = where_clause(cohort, "c")
    return _distribution(ref, f"""SELECT d.class_id, d.dice AS value, d.case_id FROM dice d JOIN cases c USING (case_id)
                                  WHERE d.model_sha256 = (SELECT model_sha256 FROM runs WHERE run_id = ?)
                                  AND d.case_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}""",
                         "class_id", [run_id, _members(ref, run_id)] + params)


# --- outliers ------------------------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def anomaly_targets(ref: StoreRef, run_id: str) -> list[int]:
    """Targets that have anomaly scores in the run (-1: averaged over classes)."""
    return query(ref, "SELECT DISTINCT target_id FROM anomaly WHERE run_id = ? ORDER BY 1",
                 [run_id]).target_id.astype(int).tolist()


@st.cache_data(max_entries=32, show_spinner=False)
def anomaly_ranking(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int) -> pd.DataFrame:
    """Cohort cases ranked by anomaly score for one target, with Dice and metadata."""
    condition, params = where_clause(cohort, "c")
    dice_of_case = ("(SELECT avg(d.dice) FROM dice d WHERE d.case_id = a.case_id AND d.model_sha256 = m.sha)"
                    if int(target_id) == AVERAGE_TARGET else
                    "(SELECT d.dice FROM dice d WHERE d.case_id = a.case_id AND d.class_id = a.target_id "
                    "AND d.model_sha256 = m.sha)")
    frame = query(ref, f"""
        WITH m AS (SELECT model_sha256 AS sha FROM runs WHERE run_id = ?)
        SELECT a.case_id, a.score, a.is_outlier, {dice_of_case} AS dice, c.sex, c.age, c.dataset, c.split,
               c.pathologies
        FROM anomaly a JOIN cases c USING (case_id), m
        WHERE a.run_id = ? AND a.target_id = ? AND {condition} ORDER BY a.score DESC, a.case_id""",
                  [run_id, run_id, int(target_id)] + params)
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
# Evaluation runs (runs.source = 'evaluate') have no case_status or matrix rows: their cases
# are filtered through the cases table and the cohort filter alone, not through a run's cases.

@st.cache_data(max_entries=16, show_spinner=False)
def method_eval_summary(ref: StoreRef, run_ids: tuple[str, ...], cohort: CohortFilter) -> pd.DataFrame:
    """Per run, dataset and metric over the cohort's evaluated (case, target) pairs: mean, std, n,
    the number of cases and the median."""
    condition, params = where_clause(cohort, "c")
    return query(ref, f"""
        SELECT e.run_id, c.dataset, e.metric, avg(e.value) AS mean, stddev_samp(e.value) AS std,
               count(e.value) AS n, count(DISTINCT e.case_id) AS n_cases, median(e.value) AS median
        FROM method_eval e JOIN cases c USING (case_id)
        WHERE e.run_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}
        GROUP BY e.run_id, c.dataset, e.metric ORDER BY 1, 2, 3""", [list(run_ids)] + params)


@st.cache_data(max_entries=16, show_spinner=False)
def perturbation_summary(ref: StoreRef, run_ids: tuple[str, ...], cohort: CohortFilter) -> pd.DataFrame:
    """MoRF/LeRF curves: median and IQR per run, ordering and step over the cohort's (case, class)
    curves, each normalised as the nAOPC/nABPC are: ``(s - s_min) / (s(0) - s_min)``, ``s(0)`` the
    clean score and ``s_min`` the fully perturbed one (MoRF's last step), so that classes of
    different sizes and logit scales share one axis (1 = clean, 0 = all removed). Curves whose
    span is zero drop out, as they do from the normalised metrics."""
    condition, params = where_clause(cohort, "c")
    return query(ref, f"""
        WITH curves AS (
            SELECT p.run_id, p.case_id, p.target_id, lower(p.ordering) AS ordering, p.step, p.fraction, p.value
            FROM perturbation_curve p JOIN cases c USING (case_id)
            WHERE p.run_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}),
        ends AS (
            SELECT run_id, case_id, target_id, arg_min(value, step) AS clean, arg_max(value, step) AS removed
            FROM curves WHERE ordering = 'morf' GROUP BY run_id, case_id, target_id),
        normalised AS (
            SELECT k.run_id, k.ordering, k.step, k.fraction, (k.value - e.removed) / (e.clean - e.removed) AS value
            FROM curves k JOIN ends e USING (run_id, case_id, target_id)
            WHERE abs(e.clean - e.removed) > 1e-12)
        SELECT run_id, ordering, step, avg(fraction) AS fraction, median(value) AS median,
               quantile_cont(value, 0.25) AS q25, quantile_cont(value, 0.75) AS q75, count(value) AS n
        FROM normalised GROUP BY run_id, ordering, step ORDER BY 1, 2, 3""", [list(run_ids)] + params)


@st.cache_data(max_entries=16, show_spinner=False)
def evaluated_case_count(ref: StoreRef, run_ids: tuple[str, ...]) -> int:
    """Distinct cases with evaluation rows in any of the runs (before the cohort filter)."""
    frame = query(ref, """
        SELECT count(DISTINCT case_id) AS n FROM (
            SELECT case_id FROM method_eval WHERE run_id IN (SELECT unnest(?::VARCHAR[]))
            UNION ALL SELECT case_id FROM perturbation_curve WHERE run_id IN (SELECT unnest(?::VARCHAR[])))""",
                  [list(run_ids), list(run_ids)])
    return int(frame.n.iloc[0])


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

def has_table(ref: StoreRef, name: str) -> bool:
    """Whether the store has a table that older stores lack (causal and analysis tables)."""
    return name in table_names(ref)


def _cohort_cte(ref: StoreRef, run_id: str, cohort: CohortFilter) -> tuple[str, list]:
    """``WITH cohort AS (...)``: the run's cases passing the filter, with their dataset."""
    condition, params = where_clause(cohort, "c")
    return (f"WITH cohort AS (SELECT c.case_id, c.dataset FROM cases c "
            f"WHERE c.case_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}) ", [_members(ref, run_id)] + params)

@st.cache_data(max_entries=32, show_spinner=False)
def causal_summary(ref: StoreRef, run_id: str, cohort: CohortFilter) -> pd.DataFrame:
    """Per target and source over the cohort: mean ATE, std and n of cases, mean per-case SE."""
    if not has_table(ref, "causal_effect"):
        return pd.DataFrame(columns=["target_id", "source_id", "mean", "std", "n", "mean_se"])
    cte, params = _cohort_cte(ref, run_id, cohort)
    return query(ref, cte + """
        SELECT e.target_id, e.source_id, avg(e.ate) AS mean, stddev_samp(e.ate) AS std, count(e.ate) AS n,
               avg(e.se) AS mean_se
        FROM causal_effect e JOIN cohort USING (case_id) WHERE e.run_id = ?
        GROUP BY e.target_id, e.source_id ORDER BY 1, 2""", params + [run_id])


@st.cache_data(max_entries=32, show_spinner=False)
def causal_target_values(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int) -> pd.DataFrame:
    """Every case's effects on one target: case_id, source_id, ate, se, n, dataset."""
    if not has_table(ref, "causal_effect"):
        return pd.DataFrame(columns=["case_id", "source_id", "ate", "se", "n", "dataset"])
    cte, params = _cohort_cte(ref, run_id, cohort)
    return query(ref, cte + """
        SELECT e.case_id, e.source_id, e.ate, e.se, e.n, c.dataset
        FROM causal_effect e JOIN cohort c USING (case_id) WHERE e.run_id = ? AND e.target_id = ?
        ORDER BY e.source_id, e.case_id""", params + [run_id, int(target_id)])


@st.cache_data(max_entries=64, show_spinner=False)
def causal_case(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's effects: target_id, source_id, ate, se, n."""
    if not has_table(ref, "causal_effect"):
        return pd.DataFrame(columns=["target_id", "source_id", "ate", "se", "n"])
    return query(ref, "SELECT target_id, source_id, ate, se, n FROM causal_effect "
                           "WHERE run_id = ? AND case_id = ? ORDER BY 1, 2", [run_id, case_id])


@st.cache_data(max_entries=32, show_spinner=False)
def component_effects(ref: StoreRef, run_id: str, cohort: CohortFilter, case_id: str | None = None
                      ) -> pd.DataFrame:
    """Component effects per target and component: mean ATE, std, n cases, mean SE (one case or the cohort)."""
    if not has_table(ref, "component_effect"):
        return pd.DataFrame(columns=["target_id", "component", "position", "mean", "std", "n", "mean_se"])
    cte, params = _cohort_cte(ref, run_id, cohort)
    return query(ref, cte + """
        SELECT e.target_id, e.component, min(e.position) AS position, avg(e.ate) AS mean,
               stddev_samp(e.ate) AS std, count(e.ate) AS n, avg(e.se) AS mean_se
        FROM component_effect e JOIN cohort USING (case_id)
        WHERE e.run_id = ? AND (CAST(? AS VARCHAR) IS NULL OR e.case_id = ?)
        GROUP BY e.target_id, e.component ORDER BY 1, 3""", params + [run_id, case_id, case_id])


@st.cache_data(max_entries=32, show_spinner=False)
def relevance_masks(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """A case's relevance masks: target_id, share, n_units, n_voxels, dice_keep, dice_remove."""
    if not has_table(ref, "relevance_mask"):
        return pd.DataFrame(columns=["target_id", "share", "n_units", "n_voxels", "dice_keep", "dice_remove"])
    return query(ref, "SELECT target_id, share, n_units, n_voxels, dice_keep, dice_remove "
                           "FROM relevance_mask WHERE run_id = ? AND case_id = ? ORDER BY 1", [run_id, case_id])


# --- analyses beyond the paper (agg2exp_core.analysis: drift, quality, reasons, uncertainty, agreement) ------
# Their tables are newer than the store format's first version: a store without one shows an empty state
# (``has_table``), never an error.

@st.cache_data(max_entries=16, show_spinner=False)
def drift_tests(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Per dataset and class: energy statistic, p, q (BH), n_ref, n_new, reference dataset."""
    if not has_table(ref, "drift"):
        return pd.DataFrame(columns=["dataset", "target_id", "statistic", "p_value", "q_value", "n_ref", "n_new",
                                     "reference", "n_permutations", "kind", "p_value_raw", "q_value_raw"])
    # kind / raw p and q: stores written before the volume-adjusted mass have none
    details = ("kind, p_value_raw, q_value_raw" if _has_column(ref, "drift", "kind")
               else "'abs' AS kind, p_value AS p_value_raw, q_value AS q_value_raw")   # one of two fixed fragments
    return query(ref, "SELECT dataset, target_id, statistic, p_value, q_value, n_ref, n_new, reference, "
                      f"n_permutations, {details} FROM drift WHERE run_id = ? ORDER BY dataset, target_id", [run_id])


@st.cache_data(max_entries=32, show_spinner=False)
def drift_cells(ref: StoreRef, run_id: str, dataset: str, limit: int = 30) -> pd.DataFrame:
    """The cells that moved most (by |Hedges' g| among q < 0.05 first) for one dataset."""
    return query(ref, """
        SELECT target_id, source_id, mean_ref, mean_new, difference, effect_size, p_value, q_value
        FROM drift_cells WHERE run_id = ? AND dataset = ?
        ORDER BY (q_value < 0.05) DESC, abs(effect_size) DESC NULLS LAST, target_id, source_id LIMIT ?""",
                 [run_id, dataset, int(limit)])


@st.cache_data(max_entries=32, show_spinner=False)
def drift_cases(ref: StoreRef, run_id: str, cohort: CohortFilter, target_id: int, limit: int = 25) -> pd.DataFrame:
    """The cohort's cases that drift most for one class (-1: averaged over classes), with metadata."""
    condition, params = where_clause(cohort, "c")
    return query(ref, f"""
        SELECT d.case_id, d.score, c.dataset, c.split, c.sex, c.age, c.pathologies
        FROM drift_cases d JOIN cases c USING (case_id)
        WHERE d.run_id = ? AND d.target_id = ? AND {condition} ORDER BY d.score DESC, d.case_id LIMIT ?""",
                 [run_id, int(target_id)] + params + [int(limit)])


@st.cache_data(max_entries=32, show_spinner=False)
def dice_estimates(ref: StoreRef, run_id: str, class_id: int) -> pd.DataFrame:
    """Expected Dice of every case of the run for one class (-1: the mean over classes)."""
    if not has_table(ref, "dice_estimate"):
        return pd.DataFrame(columns=["case_id", "estimate", "low", "high", "level", "likely_failure", "fitted"])
    return query(ref, "SELECT case_id, estimate, low, high, level, likely_failure, fitted FROM dice_estimate "
                      "WHERE run_id = ? AND class_id = ? ORDER BY case_id", [run_id, int(class_id)])


@st.cache_data(max_entries=64, show_spinner=False)
def case_dice_estimates(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's expected Dice per class (and -1) beside its true Dice where known."""
    if not has_table(ref, "dice_estimate"):
        return pd.DataFrame(columns=["class_id", "estimate", "low", "high", "level", "likely_failure", "fitted",
                                     "dice"])
    return query(ref, """
        SELECT e.class_id, e.estimate, e.low, e.high, e.level, e.likely_failure, e.fitted,
               CASE WHEN e.class_id = -1 THEN (SELECT avg(d.dice) FROM dice d WHERE d.case_id = e.case_id
                                                AND d.model_sha256 = r.model_sha256)
                    ELSE (SELECT d.dice FROM dice d WHERE d.case_id = e.case_id AND d.class_id = e.class_id
                          AND d.model_sha256 = r.model_sha256) END AS dice
        FROM dice_estimate e JOIN runs r USING (run_id) WHERE e.run_id = ? AND e.case_id = ? ORDER BY e.class_id""",
                 [run_id, case_id])


@st.cache_data(max_entries=16, show_spinner=False)
def dice_estimate_quality(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """How well the estimate did where the truth is known: scope, metric, value, n."""
    if not has_table(ref, "dice_estimate_quality"):
        return pd.DataFrame(columns=["scope", "metric", "value", "n"])
    return query(ref, "SELECT scope, metric, value, n FROM dice_estimate_quality WHERE run_id = ? "
                      "ORDER BY scope, metric", [run_id])


@st.cache_data(max_entries=64, show_spinner=False)
def outlier_reasons(ref: StoreRef, run_id: str, case_id: str, target_id: int, limit: int = 8) -> pd.DataFrame:
    """The cells that push one case's anomaly score for one class most (-1: over every class)."""
    if not has_table(ref, "outlier_reasons"):
        return pd.DataFrame(columns=["target_id", "source_id", "contribution"])
    return query(ref, """
        SELECT target_id, source_id, contribution FROM outlier_reasons
        WHERE run_id = ? AND case_id = ? AND (? = ? OR target_id = ?)
        ORDER BY contribution DESC, target_id, source_id LIMIT ?""",
                 [run_id, case_id, int(target_id), AVERAGE_TARGET, int(target_id), int(limit)])


@st.cache_data(max_entries=64, show_spinner=False)
def stored_intervals(ref: StoreRef, run_id: str, cohort_name: str, kind: str) -> pd.DataFrame:
    """Bootstrap intervals the analysis stored for a cohort (``*`` or a dataset) and kind."""
    if not has_table(ref, "bootstrap_ci"):
        return pd.DataFrame(columns=["target_id", "source_id", "estimate", "low", "high", "n", "n_boot", "level"])
    return query(ref, "SELECT target_id, source_id, estimate, low, high, n, n_boot, level FROM bootstrap_ci "
                      "WHERE run_id = ? AND cohort = ? AND kind = ? ORDER BY 1, 2", [run_id, cohort_name, kind])


@st.cache_data(max_entries=64, show_spinner=False)
def sampling_noise(ref: StoreRef, run_id: str, case_id: str) -> pd.DataFrame:
    """One case's SmoothGrad sampling noise per cell and kind: SE, interval, noise samples behind it."""
    if not has_table(ref, "sampling_noise"):
        return pd.DataFrame(columns=["target_id", "source_id", "kind", "se", "low", "high", "n_samples"])
    return query(ref, "SELECT target_id, source_id, kind, se, low, high, n_samples FROM sampling_noise "
                      "WHERE run_id = ? AND case_id = ? ORDER BY kind, target_id, source_id", [run_id, case_id])


def global_matrix_spread(ref: StoreRef, run_id: str, cohort: CohortFilter, kind: str = "abs") -> pd.DataFrame:
    """Mean, standard deviation and count per cell over the cohort (the cached ``global_matrix`` frame)."""
    return global_matrix(ref, run_id, cohort, kind)


@st.cache_data(max_entries=16, show_spinner=False)
def method_agreement(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Agreement of the run with the other runs over the same cases, per class (-1: pooled)."""
    if not has_table(ref, "method_agreement"):
        return pd.DataFrame(columns=["other_run_id", "target_id", "spearman_mean", "spearman_low", "spearman_high",
                                     "spearman_median", "n_cases", "kind", "null_mean", "null_high"])
    # kind / the volume-only null: stores written before the volume-adjusted mass have none
    details = ("kind, null_mean, null_high" if _has_column(ref, "method_agreement", "null_mean")
               else "'abs' AS kind, NULL::DOUBLE AS null_mean, NULL::DOUBLE AS null_high")   # fixed fragments
    return query(ref, f"""
        SELECT other_run_id, target_id, spearman_mean, spearman_low, spearman_high, spearman_median, n_cases,
               {details}
        FROM method_agreement WHERE run_id = ? ORDER BY other_run_id, target_id""", [run_id])


@st.cache_data(max_entries=32, show_spinner=False)
def method_disagreement(ref: StoreRef, run_id: str, other_run_id: str, limit: int = 20) -> pd.DataFrame:
    """The cells where two runs differ most on the same cases."""
    return query(ref, """
        SELECT target_id, source_id, mean_run, mean_other, difference, mean_abs_difference FROM method_disagreement
        WHERE run_id = ? AND other_run_id = ? ORDER BY mean_abs_difference DESC, target_id, source_id LIMIT ?""",
                 [run_id, other_run_id, int(limit)])


@st.cache_data(max_entries=16, show_spinner=False)
def paper_parity(ref: StoreRef, run_id: str) -> pd.DataFrame:
    if not has_table(ref, "paper_parity"):
        return pd.DataFrame(columns=["target_id", "label", "spearman_rho", "p_value", "paper_rho", "paper_p_value",
                                     "n"])
    return query(ref, "SELECT target_id, label, spearman_rho, p_value, paper_rho, paper_p_value, n FROM paper_parity "
                      "WHERE run_id = ? ORDER BY target_id = -1, target_id", [run_id])


@st.cache_data(max_entries=16, show_spinner=False)
def analysis_settings(ref: StoreRef, run_id: str) -> dict:
    """The settings and score convention of the run's outlier analysis ({} when not stored)."""
    if not has_table(ref, "analysis_settings"):
        return {}
    frame = query(ref, "SELECT CAST(settings AS VARCHAR) AS settings, score_convention FROM analysis_settings "
                       "WHERE run_id = ?", [run_id])
    if frame.empty:
        return {}
    return {**_json_or_empty(frame.settings.iloc[0]), "score_convention": frame.score_convention.iloc[0]}
