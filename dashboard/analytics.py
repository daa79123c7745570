"""Pure table and matrix helpers of the dashboard (no Streamlit, no SQL; unit-tested).

They turn the long frames of ``dashboard.data`` into matrices, orders, graph edges,
cohort splits, and the methods table, so the pages only lay things out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from agg2exp_core.labels import GROUP_COLORS
from agg2exp_core.analysis import graph
from agg2exp_core.analysis.ordering import ClusterOrder, cluster_order, group_order
from agg2exp_core.vocabulary import (AVERAGE_TARGET, IG_DEFAULT_RULE, IG_PAPER_RULE, METRICS, UNION_TARGET,
                                     VOLUME_TARGET, metric_label, method_title)
from dashboard.filters import PATHOLOGY_NONE, UNKNOWN, pathology_names

AGE_BANDS = ((0, 40, "< 40"), (40, 60, "40–59"), (60, 80, "60–79"), (80, 200, "≥ 80"))


@dataclass(frozen=True)
class Roi:
    roi_id: int
    name: str
    grp: str
    color: str
    is_class: bool


def roi_table(rois: pd.DataFrame) -> dict[int, Roi]:
    """roi_id -> Roi from the rois frame; colours follow the group palette of the paper."""
    return {int(r.roi_id): Roi(int(r.roi_id), str(r.name), str(r.grp),
                               GROUP_COLORS.get(str(r.grp), str(r.color)), bool(r.is_class))
            for r in rois.itertuples()}


# How every figure, table and caption names AVERAGE_TARGET (a score or estimate over all classes).
AVERAGE_TARGET_TITLE = "mean over classes"


def roi_name(table: dict[int, Roi], roi_id: int) -> str:
    if int(roi_id) == AVERAGE_TARGET:
        return AVERAGE_TARGET_TITLE
    if int(roi_id) == UNION_TARGET:
        return "any class (outliers of any class)"
    if int(roi_id) == VOLUME_TARGET:
        return "volume shares (control)"
    roi = table.get(int(roi_id))
    return roi.name if roi else f"roi {roi_id}"


# --- matrices ------------------------------------------------------------------------------

def matrix_from_long(frame: pd.DataFrame, value: str = "mean", row: str = "target_id",
                     column: str = "source_id") -> tuple[list[int], list[int], np.ndarray]:
    """(row ids, column ids, matrix) of a long frame; NaN where a pair is missing."""
    if frame.empty:
        return [], [], np.zeros((0, 0))
    wide = frame.pivot_table(index=row, columns=column, values=value, aggfunc="first", dropna=False)
    return ([int(i) for i in wide.index], [int(c) for c in wide.columns],
            wide.to_numpy(dtype=float, na_value=np.nan))


@dataclass(frozen=True)
class MatrixOrder:
    rows: list[int]
    columns: list[int]
    row_tree: ClusterOrder | None = None
    column_tree: ClusterOrder | None = None


def order_matrix(matrix: np.ndarray, row_groups: Sequence[str], column_groups: Sequence[str],
                 how: str = "group") -> MatrixOrder:
    """Row/column order: ``group`` (anatomical groups), ``cluster`` (hierarchical) or ``id``."""
    n_rows, n_cols = matrix.shape
    if how == "cluster":
        rows, cols = cluster_order(matrix, axis=0), cluster_order(matrix, axis=1)
        return MatrixOrder(rows.order, cols.order, rows, cols)
    if how == "group":
        return MatrixOrder(group_order(list(row_groups)), group_order(list(column_groups)))
    return MatrixOrder(list(range(n_rows)), list(range(n_cols)))


def top_k_edges(matrix: np.ndarray, target_ids: Sequence[int], source_ids: Sequence[int], k: int,
                include_self: bool = False, min_mass: float = 0.0, cumulative: float | None = None) -> pd.DataFrame:
    """The k most important sources of every target (``agg2exp_core.analysis.graph.top_k_edges``)."""
    return graph.top_k_edges(matrix, target_ids, source_ids,
                             graph.GraphConfig(k=max(int(k), 0), min_mass=min_mass, cumulative=cumulative,
                                               include_self=include_self))


def circular_layout(node_ids: Sequence[int], groups: Sequence[str]) -> dict[int, tuple[float, float]]:
    """Fixed circular layout: nodes ordered by anatomical group, first at the top, clockwise."""
    order = group_order(list(groups))
    n = max(len(node_ids), 1)
    positions = {}
    for slot, index in enumerate(order):
        angle = math.pi / 2 - 2 * math.pi * slot / n
        positions[int(node_ids[index])] = (math.cos(angle), math.sin(angle))
    return positions


# --- cohort tables -------------------------------------------------------------------------

def age_band(ages: pd.Series) -> pd.Series:
    """Age band labels ('< 40', '40–59', ...; 'unknown' where missing)."""
    labels = pd.Series(UNKNOWN, index=ages.index, dtype=object)
    numeric = pd.to_numeric(ages, errors="coerce")
    for lo, hi, label in AGE_BANDS:
        labels[(numeric >= lo) & (numeric < hi)] = label
    return labels


def case_counts(cases: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Counts of cases by dataset, split, sex and age band (missing values as 'unknown')."""
    order = [label for _, _, label in AGE_BANDS] + [UNKNOWN]
    columns = {"dataset": cases["dataset"].fillna(UNKNOWN), "split": cases["split"].fillna(UNKNOWN),
               "sex": cases["sex"].fillna(UNKNOWN), "age band": age_band(cases["age"])}
    out = {}
    for name, series in columns.items():
        counts = series.value_counts().rename_axis(name).reset_index(name="cases")
        if name == "age band":
            counts = counts.set_index(name).reindex([o for o in order if o in set(series)]).reset_index()
        else:
            counts = counts.sort_values(name).reset_index(drop=True)
        out[name] = counts
    return out


@dataclass(frozen=True)
class CohortSplit:
    """Two cohorts to compare, with their labels and case ids."""

    label_a: str
    label_b: str
    cases_a: tuple[str, ...]
    cases_b: tuple[str, ...]


def comparison_attributes(cases: pd.DataFrame) -> list[str]:
    """Attributes that split the cases into at least two non-empty groups."""
    out = []
    for column in ("sex", "dataset", "split"):
        if cases[column].dropna().nunique() >= 2:
            out.append(column)
    if pd.to_numeric(cases["age"], errors="coerce").dropna().nunique() >= 2:
        out.append("age")
    lists = cases["pathologies"].fillna("")
    if (lists != "").any() and (lists == "").any():
        out.append("pathology")
    return out


def split_cohort(cases: pd.DataFrame, attribute: str, value_a: str | float | None = None,
                 value_b: str | None = None) -> CohortSplit:
    """Split the cases in two: by a categorical value (A vs B), age (< t vs >= t) or pathology (with vs without)."""
    if attribute in ("sex", "dataset", "split"):
        a = cases[cases[attribute] == value_a]
        b = cases[cases[attribute] == value_b]
        return CohortSplit(f"{attribute} = {value_a}", f"{attribute} = {value_b}",
                           tuple(a.case_id), tuple(b.case_id))
    if attribute == "age":
        threshold = float(value_a)
        ages = pd.to_numeric(cases["age"], errors="coerce")
        return CohortSplit(f"age < {threshold:g}", f"age ≥ {threshold:g}",
                           tuple(cases.case_id[ages < threshold]), tuple(cases.case_id[ages >= threshold]))
    if attribute == "pathology":
        lists = cases["pathologies"].fillna("").str.replace(" ", "", regex=False)
        name = value_a or "any"
        has = lists != "" if name == "any" else (";" + lists + ";").str.contains(f";{name};", regex=False)
        label = "any pathology" if name == "any" else name
        return CohortSplit(f"with {label}", f"without {label}", tuple(cases.case_id[has]),
                           tuple(cases.case_id[~has]))
    raise ValueError(f"cannot split by {attribute!r}")


def pathology_values(cases: pd.DataFrame) -> list[str]:
    return ["any"] + [p for p in pathology_names(cases["pathologies"]) if p != PATHOLOGY_NONE]


# --- methods ----------------------------------------------------------------------------------

def method_label(method: str, params: dict | None) -> str:
    """'KernelSHAP (semantic)', 'SmoothGrad', ... for a run's method and parameters."""
    name = method_title(method)
    partition = (params or {}).get("partition")
    return f"{name} ({partition})" if partition and isinstance(partition, str) else name


def method_table(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of the paper: one row per dataset and method, 'median (mean ± std)' per metric
    ('mean ± std' where the summary has no median)."""
    if summary.empty:
        return pd.DataFrame()
    labels = {r.run_id: method_label(r.method, r.params) for r in runs.itertuples()}
    frame = summary.copy()
    frame["method"] = frame.run_id.map(labels).fillna(frame.run_id)
    frame["cell"] = [f"{m:.3g} ± {s:.2g}" if pd.notna(s) else f"{m:.3g}" for m, s in zip(frame["mean"], frame["std"])]
    if "median" in frame.columns:  # skewed per-case metrics (AOPC, sensitivity): the median leads
        frame["cell"] = [f"{md:.3g} (mean {cell})" if pd.notna(md) else cell
                         for md, cell in zip(frame["median"], frame["cell"])]
    frame["metric_title"] = frame.metric.map(metric_label)
    # Columns in the vocabulary's order (Table 1 of the paper), unknown names after them.
    known = [metric_label(name) for name in METRICS]
    titles = [t for t in known if t in set(frame.metric_title)] + sorted(set(frame.metric_title) - set(known))
    wide = frame.pivot_table(index=["dataset", "method", "run_id"], columns="metric_title", values="cell",
                             aggfunc="first").reindex(columns=titles)
    keys = frame.groupby(["dataset", "method", "run_id"])
    counts = keys["n"].max().rename("n (case × class)").to_frame()
    if "n_cases" in frame:
        counts.insert(0, "cases", keys["n_cases"].max())
    return wide.join(counts).reset_index().rename(columns={"run_id": "run"})


def provenance_text(run_id: str, method: str, cohort_text: str, n: int, extra: str = "") -> str:
    """Caption carried by every figure: run, method, cohort filter, n."""
    parts = [f"run {run_id} ({method})", f"cohort: {cohort_text}", f"n = {n}"]
    if extra:
        parts.append(extra)
    return "Agg2Exp Studio · " + " · ".join(parts)


# --- overview tables ------------------------------------------------------------------------

def run_provenance(run: pd.Series) -> pd.DataFrame:
    """Field/value table of a run's provenance (method, parameters, model hash, code version, …)."""
    params = run.get("params") or {}
    rows = [("run", run.get("run_id")), ("method", method_label(run.get("method"), params)),
            ("parameters", ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "(defaults)"),
            ("model sha256", run.get("model_sha256")), ("code version", run.get("code_version")),
            ("source", run.get("source")), ("description", run.get("description")),
            ("created at (UTC)", run.get("created_at")), ("classes", len(run.get("label_names") or [])),
            ("cases with results", run.get("n_cases")), ("slice artefacts", run.get("n_artifacts")),
            ("signed (pos/neg) masses", "yes" if run.get("has_signed") else "no (absolute mass only)")]
    if run.get("method") == "ig" and "rule" not in params:
        rows.insert(3, ("IG quadrature", f"{IG_DEFAULT_RULE} (default; departs from the paper's Eq. 5, "
                                         f"rule={IG_PAPER_RULE})"))
    return pd.DataFrame([(k, "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                         for k, v in rows], columns=["field", "value"])


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """All runs of a store, one line each."""
    frame = runs[["run_id", "method", "n_cases", "n_artifacts", "n_failures", "source", "created_at"]].copy()
    frame["method"] = [method_label(m, p) for m, p in zip(runs.method, runs.params)]
    return frame.rename(columns={"n_cases": "cases", "n_artifacts": "artefacts", "n_failures": "failures"})


def counts_long(counts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The counts of ``case_counts`` as one table (attribute, value, cases)."""
    return pd.concat([t.rename(columns={name: "value"}).assign(attribute=name)[["attribute", "value", "cases"]]
                      for name, t in counts.items()], ignore_index=True)


def dice_summary(boxes: pd.DataFrame, classes: Sequence[Roi]) -> pd.DataFrame:
    """Mean, median, IQR and n of Dice per class (the boxes of ``data.dice_distribution``), in the given class order."""
    stats = boxes.set_index("class_id")
    rows = [{"class": r.name, "group": r.grp, "mean": stats.at[r.roi_id, "mean"],
             "median": stats.at[r.roi_id, "median"], "q25": stats.at[r.roi_id, "q1"],
             "q75": stats.at[r.roi_id, "q3"], "n": int(stats.at[r.roi_id, "n"])}
            for r in classes if r.roi_id in stats.index]
    return pd.DataFrame(rows).round(4)


def distribution_summary(boxes: pd.DataFrame, group_column: str, names: dict[int, str]) -> pd.DataFrame:
    """Median, IQR, mean and n of a value per group id (from box statistics, e.g. per source RoI)."""
    frame = pd.DataFrame({"roi": [names.get(int(i), str(i)) for i in boxes[group_column]],
                          "median": boxes["median"], "q25": boxes["q1"], "q75": boxes["q3"],
                          "mean": boxes["mean"], "n": boxes["n"].astype(int)})
    return frame.round(5).reset_index(drop=True)


def context_mass_summary(boxes: pd.DataFrame, classes: Sequence[Roi]) -> pd.DataFrame:
    """n, mean, median and IQR of the context mass per class (in the given order) and dataset."""
    rank = {c.roi_id: i for i, c in enumerate(classes)}
    names = {c.roi_id: c.name for c in classes}
    part = boxes[boxes.target_id.isin(rank)]
    summary = pd.DataFrame({"class": part.target_id.map(names), "dataset": part.dataset,
                            "n": part["n"].astype(int), "mean": part["mean"], "q25": part["q1"],
                            "median": part["median"], "q75": part["q3"], "order": part.target_id.map(rank)})
    return (summary.sort_values(["order", "dataset"]).drop(columns="order").round(4).reset_index(drop=True))


def whisker_caption(n_outside: int, n_drawn: int, per_side: int) -> str:
    """What the points of a box plot drawn from statistics are."""
    text = ("Boxes: quartiles and median; whiskers to the furthest case within 1.5 IQR of the quartiles. "
            f"{n_outside} case value(s) lie outside the whiskers")
    if n_drawn < n_outside:
        return text + f"; the {per_side} most extreme per box and side are drawn ({n_drawn} points)."
    return text + "; all are drawn as points."


def permutation_count(choice: str, n_cells: int, alpha: float, fdr: bool) -> int:
    """Permutations for a UI choice: a number, or 'auto' (enough for BH over all cells when FDR is on)."""
    from agg2exp_core.analysis.compare import permutations_for_fdr

    if choice != "auto":
        return int(choice)
    return permutations_for_fdr(n_cells, alpha) if fdr else 1000


def adjusted_tests(tests: pd.DataFrame) -> pd.DataFrame:
    """Inlier/outlier tests with Holm-adjusted p (per family: the any-class rows, the per-class rows) and
    BH q-values over the per-class rows."""
    from agg2exp_core.analysis.compare import benjamini_hochberg
    from agg2exp_core.analysis.paper import holm

    out = tests.copy()
    out["p_holm"] = np.nan
    out["q_bh"] = np.nan
    union = out.target_id == UNION_TARGET
    for family in (union, ~union):
        if family.any():
            out.loc[family, "p_holm"] = holm(out.loc[family, "p_value"].to_numpy())
    if (~union).any():
        out.loc[~union, "q_bh"] = benjamini_hochberg(out.loc[~union, "p_value"].to_numpy())
    return out
