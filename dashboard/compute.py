"""Cached computations that combine store reads (``data``) with pure helpers and the core.

Each function returns a small, picklable result keyed on the store version, the run and
the cohort filter, so a page rerun (e.g. after a widget change elsewhere) costs a cache
lookup. The maths lives in ``agg2exp_core`` and ``dashboard.analytics``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import streamlit as st
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from agg2exp_core.analysis import uncertainty
from agg2exp_core.analysis.compare import PermutationResult, permutation_test
from agg2exp_core.analysis.retest import RELIABLE_ICC, SMOOTHGRAD_SEED
from agg2exp_core.vocabulary import ALL_CASES
from dashboard import analytics, data
from dashboard.imaging import artefact, surfaces
from dashboard.analytics import CohortSplit, Roi
from dashboard.filters import CohortFilter
from dashboard.matrices import CellIntervals, MatrixView


def _rois(ref: data.StoreRef) -> dict[int, Roi]:
    return analytics.roi_table(data.rois(ref))


@st.cache_data(max_entries=64, show_spinner=False)
def global_matrix_view(ref: data.StoreRef, run_id: str, cohort: CohortFilter, kind: str,
                       order: str) -> MatrixView:
    """The cohort's mean matrix ordered by anatomical group, clustering or id."""
    long = data.global_matrix(ref, run_id, cohort, kind)
    targets, sources, matrix = analytics.matrix_from_long(long, "mean")
    _, _, counts = analytics.matrix_from_long(long, "n")
    table = _rois(ref)
    target_rois = [table[t] for t in targets]
    source_rois = [table[s] for s in sources]
    if matrix.size == 0:
        return MatrixView(target_rois, source_rois, matrix, counts)
    how = order if np.isfinite(matrix).any() else "id"
    ordered = analytics.order_matrix(matrix, [r.grp for r in target_rois], [r.grp for r in source_rois], how)
    rows, cols = ordered.rows, ordered.columns
    return MatrixView([target_rois[i] for i in rows], [source_rois[j] for j in cols],
                      matrix[np.ix_(rows, cols)], np.nan_to_num(counts[np.ix_(rows, cols)]).astype(int),
                      ordered.row_tree, ordered.column_tree)


@dataclass(frozen=True)
class Comparison:
    split: CohortSplit
    targets: list[Roi]
    sources: list[Roi]
    result: PermutationResult
    interval: uncertainty.Interval | None = None     # bootstrap interval of each cell's difference

    def table(self) -> pd.DataFrame:
        r = self.result
        rows = []
        for i, t in enumerate(self.targets):
            for j, s in enumerate(self.sources):
                rows.append({"target": t.name, "source": s.name, f"mean {self.split.label_a}": r.mean_a[i, j],
                             f"mean {self.split.label_b}": r.mean_b[i, j], "difference": r.difference[i, j],
                             "ci_low": self.interval.low[i, j] if self.interval else np.nan,
                             "ci_high": self.interval.high[i, j] if self.interval else np.nan,
                             "t": r.statistic[i, j], "p_value": r.p_values[i, j],
                             "q_value_bh": r.q_values[i, j] if r.fdr else np.nan,
                             "q_value_by": r.q_values_by[i, j] if r.fdr else np.nan,
                             "significant": bool(r.significant[i, j])})
        return pd.DataFrame(rows).sort_values(["significant", "p_value"], ascending=[False, True])


# Permutations per matrix product: at 20,000 cases a batch's labels are 1000 x 20,000 floats
# (80 MB); larger batches gain nothing, smaller ones pay per-product overhead. The labels
# drawn do not depend on the batch size (rows drawn in order).
PERMUTATION_BATCH = 1000
COMPARISON_RESAMPLES = 500      # bootstrap resamples of the differences' intervals
# BLAS threads for the comparison's products. The permutation test keeps a second thread busy
# drawing labels, and on a loaded 2-core server BLAS threads that outnumber the free cores wait
# for each other: at 20,000 cases the bootstrap's products ran 5x slower with 2 threads than
# with 1 (the permutation products alike or slower). One core is left to the label thread.
COMPARISON_BLAS_THREADS = max(1, (os.cpu_count() or 1) - 1)
# Sequential permutation p-values (Besag & Clifford): a cell stops at its 20th permutation at least as
# extreme as observed; only cells with p < 20 / n_permutations, the ones that can pass BH, run them all.
COMPARISON_STOP_AT = 20


@st.cache_data(max_entries=32, show_spinner="Running the permutation test…")
def cohort_comparison(ref: data.StoreRef, run_id: str, cohort: CohortFilter, kind: str, split: CohortSplit,
                      n_permutations: int, seed: int, alpha: float, fdr: bool) -> Comparison:
    """Permutation test of two sub-cohorts' mean matrices (cells in anatomical-group order), with
    bootstrap intervals of the differences.

    The two cohorts' local matrices come from the store as one array (``data.local_cube``);
    ``cohort`` is part of the cache key only (the split's cases are already the cohort's).
    """
    cases, targets, sources, cube = data.local_cube(ref, run_id, split.cases_a + split.cases_b, kind)
    table = _rois(ref)
    order = analytics.order_matrix(np.zeros((len(targets), len(sources))), [table[t].grp for t in targets],
                                   [table[s].grp for s in sources], "group")
    index = {c: i for i, c in enumerate(cases)}
    rows_a = [index[c] for c in split.cases_a if c in index]
    rows_b = [index[c] for c in split.cases_b if c in index]
    # Each cohort in cell order in one copy (no reordered copy of the whole cube first).
    a, b = (cube[np.ix_(rows, order.rows, order.columns)] for rows in (rows_a, rows_b))
    with threadpool_limits(COMPARISON_BLAS_THREADS, user_api="blas"):
        result = permutation_test(a, b, n_permutations=n_permutations, seed=seed, alpha=alpha, fdr=fdr,
                                  batch_size=PERMUTATION_BATCH, stop_at=COMPARISON_STOP_AT)
        interval = uncertainty.bootstrap_difference(a, b, uncertainty.BootstrapConfig(n_boot=COMPARISON_RESAMPLES,
                                                                                     seed=seed))
    return Comparison(split, [table[targets[i]] for i in order.rows], [table[sources[j]] for j in order.columns],
                      result, interval)


@st.cache_data(max_entries=32, show_spinner=False)
def graph_edges(ref: data.StoreRef, run_id: str, cohort: CohortFilter, k: int, kind: str = "abs",
                include_background: bool = False, min_mass: float = 0.0):
    """(nodes, self mass per target, top-k edges of at least ``min_mass``, circular positions) of the
    knowledge graph (``agg2exp_core.analysis.graph``)."""
    long = data.global_matrix(ref, run_id, cohort, kind)
    table = _rois(ref)
    if not include_background:
        keep = {i for i, r in table.items() if r.name != "background"}
        long = long[long.target_id.isin(keep) & long.source_id.isin(keep)]
    targets, sources, matrix = analytics.matrix_from_long(long, "mean")
    edges = analytics.top_k_edges(matrix, targets, sources, k, include_self=False, min_mass=min_mass)
    node_ids = sorted(set(targets) | set(sources))
    nodes = [table[i] for i in node_ids]
    positions = analytics.circular_layout(node_ids, [n.grp for n in nodes])
    column = {s: j for j, s in enumerate(sources)}
    self_mass = {t: float(matrix[i, column[t]]) for i, t in enumerate(targets)
                 if t in column and np.isfinite(matrix[i, column[t]])}
    return nodes, self_mass, edges, positions


@st.cache_data(max_entries=16, show_spinner="Extracting surfaces with pyvista…")
def case_surfaces(path: str, mtime_ns: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Surfaces of a case's predicted labels (raises SurfaceUnavailable with the reason)."""
    artifact = artefact.CaseArtifact(data.load_artifact(path, mtime_ns))
    if artifact.pred is None:
        raise surfaces.SurfaceUnavailable("the artefact holds no prediction ('pred')")
    return surfaces.label_surfaces(artifact.pred, artifact.spacing)


@st.cache_data(max_entries=8, show_spinner="Rendering off-screen with pyvista…")
def case_snapshot(path: str, mtime_ns: int) -> bytes:
    return surfaces.snapshot(path)


@st.cache_data(max_entries=64, show_spinner=False)
def case_matrix_view(ref: data.StoreRef, run_id: str, case_id: str, kind: str, like: MatrixView) -> MatrixView:
    """One case's local matrix in the row/column order of ``like`` (e.g. the cohort mean)."""
    long = data.case_matrix(ref, run_id, case_id, kind)
    targets, sources, matrix = analytics.matrix_from_long(long, "value")
    t_index = {t: i for i, t in enumerate(targets)}
    s_index = {s: j for j, s in enumerate(sources)}
    out = np.full((len(like.targets), len(like.sources)), np.nan)
    for i, t in enumerate(like.targets):
        for j, s in enumerate(like.sources):
            if t.roi_id in t_index and s.roi_id in s_index:
                out[i, j] = matrix[t_index[t.roi_id], s_index[s.roi_id]]
    return MatrixView(like.targets, like.sources, out, np.isfinite(out).astype(int))


@dataclass(frozen=True)
class CaseNoise:
    """A case's SmoothGrad sampling noise in the cell order of a ``MatrixView`` (NaN where none is stored)."""

    se: np.ndarray
    n_samples: int
    table: pd.DataFrame  # target, source, mass, se, low, high, n_samples (for the table and its CSV)


def case_noise_view(ref: data.StoreRef, run_id: str, case_id: str, kind: str, local: MatrixView) -> CaseNoise | None:
    """The stored standard errors of one case's matrix cells (None: the run has none for this case)."""
    rows = data.sampling_noise(ref, run_id, case_id)
    rows = rows[rows.kind == kind]
    if rows.empty:
        return None
    se = cells_in_view(rows, "se", local)
    t_index = {t.roi_id: i for i, t in enumerate(local.targets)}
    s_index = {s.roi_id: j for j, s in enumerate(local.sources)}
    names = {r.roi_id: r.name for r in (*local.targets, *local.sources)}
    table = pd.DataFrame({"target": rows.target_id.map(names), "source": rows.source_id.map(names),
                          "mass": [local.matrix[t_index[t], s_index[s]] if t in t_index and s in s_index else np.nan
                                   for t, s in zip(rows.target_id, rows.source_id)],
                          "se": rows.se.to_numpy(), "low": rows.low.to_numpy(), "high": rows.high.to_numpy(),
                          "n_samples": rows.n_samples.to_numpy()}).dropna(subset=["target", "source"])
    return CaseNoise(se, int(rows.n_samples.max()), table.sort_values("se", ascending=False, ignore_index=True))


@dataclass(frozen=True)
class CellReliability:
    """Test-retest ICC of a matrix's cells across SmoothGrad seeds, in the cell order of a ``MatrixView``."""

    icc: np.ndarray
    n_cases: int
    n_repeats: int

    @property
    def n_unreliable(self) -> int:
        return int((self.icc[np.isfinite(self.icc)] < RELIABLE_ICC).sum())


def cell_reliability(ref: data.StoreRef, run_id: str, kind: str, view: MatrixView) -> CellReliability | None:
    """The run's stored seed test-retest ICC of ``kind`` per cell of ``view`` (None: none stored)."""
    rows = data.retest_icc(ref, run_id, SMOOTHGRAD_SEED)
    rows = rows[rows.kind == kind]
    if rows.empty:
        return None
    return CellReliability(cells_in_view(rows, "icc", view), int(rows.n_cases.max()), int(rows.n_repeats.max()))


def cells_in_view(rows: pd.DataFrame, column: str, view: MatrixView) -> np.ndarray:
    """``rows[column]`` (one row per target_id, source_id) laid out in the cell order of ``view`` (NaN: no row)."""
    out = np.full(view.matrix.shape, np.nan)
    t_index = {t.roi_id: i for i, t in enumerate(view.targets)}
    s_index = {s.roi_id: j for j, s in enumerate(view.sources)}
    for target_id, source_id, value in zip(rows.target_id, rows.source_id, rows[column]):
        if target_id in t_index and source_id in s_index:
            out[t_index[target_id], s_index[source_id]] = value
    return out


# --- intervals, expected Dice, outlier reasons, drift (the analyses beyond the paper) ----------------------

# Cohorts up to this size get a live bootstrap (one array read, ~0.1 s); larger ones a normal approximation
# from SQL (their percentile intervals agree with it to the third digit at these sizes).
LIVE_BOOTSTRAP_CASES = 2000
LIVE_BOOTSTRAP_RESAMPLES = 500


def stored_cohort_name(cohort: CohortFilter) -> str | None:
    """The ``bootstrap_ci.cohort`` a filter stands for: all cases, or exactly one dataset; else None."""
    if cohort == CohortFilter():
        return ALL_CASES
    if cohort.datasets and len(cohort.datasets) == 1 and replace(cohort, datasets=None) == CohortFilter():
        return cohort.datasets[0]
    return None


def _aligned(frame: pd.DataFrame, like: MatrixView, column: str) -> np.ndarray:
    values = {(int(t), int(s)): float(v) for t, s, v in zip(frame.target_id, frame.source_id, frame[column])}
    return np.array([[values.get((t.roi_id, s.roi_id), np.nan) for s in like.sources] for t in like.targets])


@st.cache_data(max_entries=64, show_spinner="Bootstrap intervals…")
def matrix_intervals(ref: data.StoreRef, run_id: str, cohort: CohortFilter, kind: str, like: MatrixView,
                     n_cases: int, level: float = 0.95) -> CellIntervals:
    """95 % intervals of the cohort's mean matrix: stored bootstrap, live bootstrap, or normal approximation."""
    name = stored_cohort_name(cohort)
    stored = data.stored_intervals(ref, run_id, name, kind) if name else pd.DataFrame()
    if len(stored):
        n_boot = int(stored.n_boot.iloc[0])
        return CellIntervals(_aligned(stored, like, "low"), _aligned(stored, like, "high"),
                             f"{stored.level.iloc[0]:.0%} bootstrap intervals over patients ({n_boot} resamples)"
                             + interval_caveat(n_cases))
    if n_cases <= LIVE_BOOTSTRAP_CASES:
        cases, targets, sources, cube = data.local_cube(ref, run_id, _cohort_case_ids(ref, run_id, cohort), kind)
        interval = uncertainty.bootstrap_mean(cube, uncertainty.BootstrapConfig(n_boot=LIVE_BOOTSTRAP_RESAMPLES,
                                                                               level=level))
        frame = uncertainty.interval_frame(interval, targets, sources, kind, "live")
        return CellIntervals(_aligned(frame, like, "low"), _aligned(frame, like, "high"),
                             f"{level:.0%} studentised bootstrap intervals over patients ({LIVE_BOOTSTRAP_RESAMPLES} "
                             "resamples)" + interval_caveat(n_cases))
    spread = data.global_matrix_spread(ref, run_id, cohort, kind)
    z = norm.ppf(0.5 + level / 2)                  # two-sided normal quantile of the level
    half = z * spread.sd / np.sqrt(spread.n)
    frame = spread.assign(low=spread["mean"] - half, high=spread["mean"] + half)
    return CellIntervals(_aligned(frame, like, "low"), _aligned(frame, like, "high"),
                         f"{level:.0%} intervals by the normal approximation (n > {LIVE_BOOTSTRAP_CASES})")


def interval_caveat(n_cases: int) -> str:
    """What a reader must know about the cells' intervals: pointwise, and unreliable for few patients."""
    note = "; pointwise: each cell's interval on its own, not all cells at once"
    if n_cases < uncertainty.MIN_RELIABLE_N:
        note += (f". Only {n_cases} patients (< {uncertainty.MIN_RELIABLE_N}): intervals of skewed cells "
                 "under-cover (about 90 % at a nominal 95 % for 8 patients)")
    return note


def _cohort_case_ids(ref: data.StoreRef, run_id: str, cohort: CohortFilter) -> tuple[str, ...]:
    return tuple(data.cohort_cases(ref, run_id, cohort).case_id)


def interval_table(view: MatrixView, intervals: CellIntervals, value_label: str) -> pd.DataFrame:
    """``MatrixView.long_table`` with the interval bounds (for the table and its CSV)."""
    table = view.long_table(value_label)
    table.insert(3, "ci_low", intervals.low.ravel())
    table.insert(4, "ci_high", intervals.high.ravel())
    return table


@st.cache_data(max_entries=32, show_spinner=False)
def outlier_ranking(ref: data.StoreRef, run_id: str, cohort: CohortFilter, target_id: int) -> pd.DataFrame:
    """The anomaly ranking with each case's expected Dice (class ``target_id``, -1: mean) and failure flag."""
    ranking = data.anomaly_ranking(ref, run_id, cohort, target_id)
    estimates = data.dice_estimates(ref, run_id, target_id)
    if estimates.empty:
        return ranking
    expected = estimates.rename(columns={"estimate": "expected_dice", "low": "expected_low", "high": "expected_high"})
    merged = ranking.merge(expected[["case_id", "expected_dice", "expected_low", "expected_high", "likely_failure"]],
                           on="case_id", how="left")
    merged["likely_failure"] = merged["likely_failure"].fillna(False).astype(bool)
    return merged


@st.cache_data(max_entries=64, show_spinner=False)
def reason_table(ref: data.StoreRef, run_id: str, case_id: str, target_id: int, k: int = 8) -> pd.DataFrame:
    """A case's top outlier cells with names: target, source, contribution (path-length units)."""
    reasons = data.outlier_reasons(ref, run_id, case_id, target_id, k)
    table = _rois(ref)
    return reasons.assign(target=[table[int(t)].name for t in reasons.target_id],
                          source=[table[int(s)].name for s in reasons.source_id])


@st.cache_data(max_entries=16, show_spinner="Testing the cohort against the reference…")
def cohort_drift(ref: data.StoreRef, run_id: str, cohort: CohortFilter, reference: str) -> pd.DataFrame:
    """Class drift tests of the filtered cohort (reference cases left out) against the reference dataset."""
    from agg2exp_core.analysis.drift import DriftConfig, class_rows, class_tests

    members = [c for c in _cohort_case_ids(ref, run_id, cohort)]
    all_cases = data.run_cases(ref, run_id)
    reference_ids = tuple(all_cases.case_id[all_cases.dataset == reference])
    new_ids = tuple(c for c in members if c not in set(reference_ids))
    if len(new_ids) < 2 or len(reference_ids) < 2:
        return pd.DataFrame()
    runs = data.runs(ref).set_index("run_id")
    kind = "lift" if run_id in runs.index and bool(runs.at[run_id, "has_lift"]) else "abs"  # as the stored tests
    cases, targets, sources, cube = data.local_cube(ref, run_id, new_ids + reference_ids, kind)
    table = _rois(ref)
    class_sources = [s for s in sources if table[s].is_class]
    is_new = np.isin(cases, new_ids)
    rows = [class_rows(cube, t, sources, class_sources) for t in range(len(targets))]
    config = DriftConfig(reference, n_permutations=1000)
    tests = class_tests([r[~is_new] for r in rows], [r[is_new] for r in rows], config)
    tests.insert(0, "target_id", [targets[i] for i in tests.pop("index")])
    return tests
