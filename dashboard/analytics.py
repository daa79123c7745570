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
from agg2exp_core.analysis.ordering import ClusterOrder, cluster_order, group_order
from dashboard.filters import PATHOLOGY_NONE, UNKNOWN, pathology_names

AGE_BANDS = ((0, 40, "< 40"), (40, 60, "40–59"), (60, 80, "60–79"), (80, 200, "≥ 80"))
METHOD_NAMES = {"vg": "Vanilla Gradient", "smoothgrad": "SmoothGrad", "ig": "Integrated Gradients",
                "kernelshap": "KernelSHAP", "causal": "Causal effect (ATE)"}
# Known evaluation metrics: column title and whether higher is better (Table 1 of the paper).
METRIC_TITLES = {
    "faithfulness": ("Faithfulness ↑", True), "faithfulness_correlation": ("Faithfulness ↑", True),
    "sensitivity_max": ("Sensitivity (max) ↓", False), "sensitivity": ("Sensitivity ↓", False),
    "sensitivity_avg": ("Sensitivity (avg) ↓", False), "complexity": ("Complexity ↓", False),
    "efficiency_s": ("Efficiency [s] ↓", False), "efficiency": ("Efficiency [s] ↓", False),
    "seconds": ("Efficiency [s] ↓", False), "aopc_morf": ("AOPC MoRF ↑", True), "aopc_lerf": ("AOPC LeRF ↓", False),
    "abpc": ("ABPC ↑", True),
}


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


def roi_name(table: dict[int, Roi], roi_id: int) -> str:
    if int(roi_id) == -1:
        return "average over classes"
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


def cube_from_long(frame: pd.DataFrame) -> tuple[list[str], list[int], list[int], np.ndarray]:
    """``[cases, targets, sources]`` array of a long frame (case_id, target_id, source_id, value)."""
    if frame.empty:
        return [], [], [], np.zeros((0, 0, 0))
    case_codes, cases = pd.factorize(frame.case_id, sort=True)
    target_codes, targets = pd.factorize(frame.target_id, sort=True)
    source_codes, sources = pd.factorize(frame.source_id, sort=True)
    cube = np.full((len(cases), len(targets), len(sources)), np.nan)
    cube[case_codes, target_codes, source_codes] = pd.to_numeric(frame.value).to_numpy(dtype=float, na_value=np.nan)
    return list(cases), [int(t) for t in targets], [int(s) for s in sources], cube


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
                include_self: bool = False) -> pd.DataFrame:
    """The k most important sources of every target: source_id, target_id, mass, rank (1 = largest)."""
    rows = []
    for i, target in enumerate(target_ids):
        values = np.array(matrix[i], dtype=float)
        candidates = [(values[j], source) for j, source in enumerate(source_ids)
                      if np.isfinite(values[j]) and values[j] > 0 and (include_self or source != target)]
        candidates.sort(key=lambda x: (-x[0], x[1]))
        for rank, (mass, source) in enumerate(candidates[:max(int(k), 0)], start=1):
            rows.append({"source_id": int(source), "target_id": int(target), "mass": float(mass), "rank": rank})
    return pd.DataFrame(rows, columns=["source_id", "target_id", "mass", "rank"])


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
    name = METHOD_NAMES.get(str(method).lower(), str(method))
    partition = (params or {}).get("partition")
    return f"{name} ({partition})" if partition and isinstance(partition, str) else name


def method_table(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1 of the paper: one row per dataset and method, 'mean ± std' per metric."""
    if summary.empty:
        return pd.DataFrame()
    labels = {r.run_id: method_label(r.method, r.params) for r in runs.itertuples()}
    frame = summary.copy()
    frame["method"] = frame.run_id.map(labels).fillna(frame.run_id)
    frame["cell"] = [f"{m:.3g} ± {s:.2g}" if pd.notna(s) else f"{m:.3g}" for m, s in zip(frame["mean"], frame["std"])]
    frame["metric_title"] = frame.metric.map(lambda m: METRIC_TITLES.get(m, (m, True))[0])
    known = list(dict.fromkeys(t for t, _ in METRIC_TITLES.values()))
    titles = [t for t in known if t in set(frame.metric_title)] + sorted(set(frame.metric_title) - set(known))
    wide = frame.pivot_table(index=["dataset", "method", "run_id"], columns="metric_title", values="cell",
                             aggfunc="first").reindex(columns=titles)
    counts = frame.groupby(["dataset", "method", "run_id"])["n"].max().rename("n (case × class)")
    return wide.join(counts).reset_index().rename(columns={"run_id": "run"})


def context_mass(self_mass: pd.DataFrame) -> pd.DataFrame:
    """Adds ``context_mass = 1 - self_mass`` (the share of evidence outside the object itself)."""
    frame = self_mass.copy()
    frame["context_mass"] = 1.0 - frame["self_mass"]
    return frame


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


def dice_summary(dice: pd.DataFrame, classes: Sequence[Roi]) -> pd.DataFrame:
    """Mean, median, IQR and n of Dice per class, in the given class order."""
    grouped = dice.groupby("class_id")["dice"]
    summary = pd.DataFrame({"mean": grouped.mean(), "median": grouped.median(), "q25": grouped.quantile(0.25),
                            "q75": grouped.quantile(0.75), "n": grouped.count()})
    rows = [{"class": r.name, "group": r.grp, **summary.loc[r.roi_id].round(4).to_dict()}
            for r in classes if r.roi_id in summary.index]
    return pd.DataFrame(rows)


def distribution_summary(values: pd.DataFrame, group_column: str, names: dict[int, str],
                         value_column: str = "value") -> pd.DataFrame:
    """Median, IQR, mean and n of a value per group id (e.g. per source RoI)."""
    grouped = values.groupby(group_column)[value_column]
    frame = pd.DataFrame({"median": grouped.median(), "q25": grouped.quantile(0.25), "q75": grouped.quantile(0.75),
                          "mean": grouped.mean(), "n": grouped.count()}).round(5)
    frame.insert(0, "roi", [names.get(int(i), str(i)) for i in frame.index])
    return frame.reset_index(drop=True)


def context_mass_summary(frame: pd.DataFrame, classes: Sequence[Roi]) -> pd.DataFrame:
    """n, mean, median and IQR of the context mass per class (in the given order) and dataset."""
    grouped = frame.groupby(["target_id", "dataset"])["context_mass"]
    summary = pd.DataFrame({"n": grouped.count(), "mean": grouped.mean(), "q25": grouped.quantile(0.25),
                            "median": grouped.median(), "q75": grouped.quantile(0.75)}).round(4).reset_index()
    rank = {c.roi_id: i for i, c in enumerate(classes)}
    summary = summary[summary.target_id.isin(rank)].copy()
    summary.insert(0, "class", summary.target_id.map({c.roi_id: c.name for c in classes}))
    return (summary.assign(order=summary.target_id.map(rank)).sort_values(["order", "dataset"])
            .drop(columns=["order", "target_id"]).reset_index(drop=True))


def permutation_count(choice: str, n_cells: int, alpha: float, fdr: bool) -> int:
    """Permutations for a UI choice: a number, or 'auto' (enough for BH over all cells when FDR is on)."""
    from agg2exp_core.analysis.compare import permutations_for_fdr

    if choice != "auto":
        return int(choice)
    return permutations_for_fdr(n_cells, alpha) if fdr else 1000
