"""The global heat map (cohort mean per cell, its intervals and order) and the comparison of two
sub-cohorts by permutation tests."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.vocabulary import MASS_KIND_TITLES
from dashboard import analytics, compute, figures, label_groups
from dashboard.context import ViewContext
from dashboard.matrices import CellIntervals, MatrixView

ORDERS = {"group": "anatomical group", "cluster": "hierarchical clustering", "id": "label id"}
PERMUTATION_CHOICES = ["auto", "1000", "5000", "10000", "20000"]


@dataclass(frozen=True)
class MapChoices:
    kind: str = "abs"
    order: str = "group"
    log_scale: bool = False
    zoom: str = label_groups.ALL          # large label sets: "groups" or "group:<name>" (label_groups)


@dataclass
class GlobalMap:
    """The cohort's mean matrix as the page and the report show it."""

    choices: MapChoices
    matrix: MatrixView
    title: str
    figure: go.Figure | None = None
    intervals: CellIntervals | None = None
    empty: str = ""                       # why there is nothing to show ("" when there is)
    reliability: compute.CellReliability | None = None   # seed test-retest ICC per cell, where stored

    @property
    def value_label(self) -> str:
        return MASS_KIND_TITLES[self.choices.kind]

    @property
    def caption(self) -> str:
        if self.choices.zoom != label_groups.ALL:
            zoomed = label_groups.zoom_label(self.choices.zoom).capitalize()
            return f"{zoomed}; intervals are shown for single classes only."
        hover = f"Hover a cell for its {self.intervals.how}." if self.intervals else ""
        return " ".join(part for part in (hover, self.reliability_caption) if part)

    @property
    def reliability_caption(self) -> str:
        r = self.reliability
        if r is None:
            return ""
        return (f"{r.n_unreliable} of {int(np.isfinite(r.icc).sum())} cells have a test-retest ICC below "
                f"{compute.RELIABLE_ICC:g} across {r.n_repeats} SmoothGrad seeds ({r.n_cases} cases recomputed): "
                "their values depend on the noise draw (flagged in the hover).")

    def table(self) -> pd.DataFrame:
        """One row per cell: value, interval, n and the seed test-retest ICC where stored (the page's CSV)."""
        table = (self.matrix.long_table(self.value_label) if self.intervals is None else
                 compute.interval_table(self.matrix, self.intervals, self.value_label))
        if self.reliability is not None:
            table["retest_icc"] = self.reliability.icc.ravel()
        return table


def global_map(ctx: ViewContext, choices: MapChoices) -> GlobalMap:
    label = MASS_KIND_TITLES[choices.kind]
    matrix = compute.global_matrix_view(ctx.ref, ctx.run_id, ctx.cohort, choices.kind, choices.order)
    title = f"Global RoI importance ({label}), ordered by {choices.order}"
    if matrix.is_empty:
        return GlobalMap(choices, matrix, title, empty=f"No {label} values for this run and cohort.")
    if choices.zoom != label_groups.ALL:     # cells combine classes: no per-cell interval
        matrix, intervals = label_groups.zoom_view(matrix, choices.zoom), None
    else:
        intervals = compute.matrix_intervals(ctx.ref, ctx.run_id, ctx.cohort, choices.kind, matrix, len(ctx.cases))
    figure = figures.matrix_heatmap(matrix, title, ctx.provenance(), value_label=label, log_scale=choices.log_scale,
                                    intervals=intervals)
    reliability = None if choices.zoom != label_groups.ALL else compute.cell_reliability(
        ctx.ref, ctx.run_id, choices.kind, matrix)
    if reliability is not None:
        figures.add_reliability(figure, reliability.icc, compute.RELIABLE_ICC, f"{reliability.n_repeats} seeds")
    return GlobalMap(choices, matrix, title, figure, intervals, reliability=reliability)


# --- comparison of two cohorts -----------------------------------------------------------------

@dataclass(frozen=True)
class ComparisonChoices:
    kind: str
    attribute: str
    value_a: str | float | None
    value_b: str | float | None = None
    permutations: str = "auto"
    fdr: bool = True
    alpha: float = 0.05


@dataclass(frozen=True)
class AgeThreshold:
    """The age slider of an age split: range and default threshold (50 when it splits the cohort)."""

    low: float
    high: float
    default: float


def age_threshold(ctx: ViewContext) -> AgeThreshold:
    ages = ctx.cases.age.dropna()
    low, high = float(ages.min()), float(ages.max())
    return AgeThreshold(low, high, 50.0 if low < 50 <= high else float(ages.median()))


def attribute_values(ctx: ViewContext, attribute: str) -> list:
    """The values a cohort can be split by (pathologies by name)."""
    if attribute == "pathology":
        return analytics.pathology_values(ctx.cases)
    return sorted(ctx.cases[attribute].dropna().unique())


def n_permutations(ctx: ViewContext, choices: ComparisonChoices) -> tuple[int, str]:
    """The permutations to run and a warning when they are too few to pass the FDR correction."""
    n_cells = len(ctx.class_rois()) * len(ctx.rois)
    n = analytics.permutation_count(choices.permutations, n_cells, choices.alpha, choices.fdr)
    warning = ""
    if choices.fdr and n + 1 < n_cells / choices.alpha:
        warning = (f"With {n} permutations the smallest p-value is 1/{n + 1}; after the FDR correction over "
                   f"{n_cells} cells no cell can reach q < {choices.alpha}. Choose 'auto' or more permutations.")
    return int(n), warning


@dataclass
class CohortComparison:
    """Two sub-cohorts' difference map with its tests (``problem``: why none, "" when shown)."""

    problem: str = ""
    caption: str = ""
    figure: go.Figure | None = None
    name_parts: list[str] | None = None
    n_significant: int = 0
    labels: tuple[str, str] = ("", "")
    comparison: compute.Comparison | None = None
    hover_caption: str = (f"Hover a cell for the 95 % bootstrap interval of its difference "
                          f"({compute.COMPARISON_RESAMPLES} resamples of each cohort's patients).")

    def table(self) -> pd.DataFrame:
        return self.comparison.table()


def cohort_comparison(ctx: ViewContext, choices: ComparisonChoices) -> CohortComparison:
    split = analytics.split_cohort(ctx.cases, choices.attribute, choices.value_a, choices.value_b)
    if min(len(split.cases_a), len(split.cases_b)) < 2:
        return CohortComparison(f"Each cohort needs at least 2 cases: {split.label_a} has {len(split.cases_a)}, "
                                f"{split.label_b} has {len(split.cases_b)}.")
    n, _ = n_permutations(ctx, choices)
    comparison = compute.cohort_comparison(ctx.ref, ctx.run_id, ctx.cohort, choices.kind, split, n, 0,
                                           float(choices.alpha), bool(choices.fdr))
    result = comparison.result
    n_sig = int(result.significant.sum())
    caption = (f"A = {split.label_a} (n = {result.n_a}), B = {split.label_b} (n = {result.n_b}); "
               f"Welch's t per cell (valid for unequal variances), up to {result.n_permutations} permutations "
               f"(seed {result.seed}; a cell stops at its "
               f"{compute.COMPARISON_STOP_AT}th as extreme as observed, p = {compute.COMPARISON_STOP_AT}/L, Besag & "
               "Clifford); "
               f"{n_sig} significant cell(s) at {'q' if choices.fdr else 'p'} < {choices.alpha}"
               f"{' (BH; the table gives BY q-values too, valid under any dependence between cells)' if choices.fdr else ''}.")
    title = f"Difference of mean {MASS_KIND_TITLES[choices.kind]}: {split.label_a} − {split.label_b}"
    provenance = ctx.provenance(result.n_a + result.n_b, f"{split.label_a} (n={result.n_a}) vs {split.label_b} "
                                                          f"(n={result.n_b}), {result.n_permutations} permutations")
    figure = figures.difference_heatmap(result, comparison.targets, comparison.sources,
                                        (split.label_a, split.label_b), title, provenance, comparison.interval)
    hover = (f"Hover a cell for the 95 % studentised bootstrap interval of its difference "
             f"({compute.COMPARISON_RESAMPLES} resamples of each cohort's patients)"
             f"{compute.interval_caveat(min(result.n_a, result.n_b))}.")
    return CohortComparison(caption=caption, figure=figure, n_significant=n_sig, comparison=comparison,
                            labels=(split.label_a, split.label_b), hover_caption=hover,
                            name_parts=ctx.name_parts("difference-heatmap", choices.kind, split.label_a, "vs",
                                                      split.label_b))
