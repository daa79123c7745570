"""Methods: agreement between the runs' explanations, the evaluation of attribution methods (Table 1 of the
paper) and MoRF/LeRF perturbation curves."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import analytics, data, figures
from dashboard.context import ViewContext
from dashboard.filters import CohortFilter
from dashboard.views.common import with_names


def run_labels(ctx: ViewContext) -> dict[str, str]:
    return {r.run_id: analytics.method_label(r.method, r.params) for r in ctx.runs.itertuples()}


def agreement_partners(ctx: ViewContext) -> list[str]:
    """The runs whose agreement with the chosen run was computed."""
    agreement = data.method_agreement(ctx.ref, ctx.run_id)
    return sorted(agreement.other_run_id.unique()) if len(agreement) else []


@dataclass
class Agreement:
    caption: str
    figure: go.Figure
    table: pd.DataFrame
    disagreement: pd.DataFrame          # the cells where the two runs differ most (may be empty)


def _null_text(pooled: pd.DataFrame) -> str:
    """What two unrelated (noise) maps on the same region volumes would reach on the measure compared."""
    if not len(pooled) or "null_mean" not in pooled or not pd.notna(pooled.null_mean.iloc[0]):
        return ""
    measure = "the volume-adjusted mass (lift)" if pooled.kind.iloc[0] == "lift" else "raw mass"
    return (f" Compared on {measure}: two independent noise maps on the same region volumes reach "
            f"{pooled.null_mean.iloc[0]:.3f} (95th percentile {pooled.null_high.iloc[0]:.3f}).")


def agreement(ctx: ViewContext, other: str) -> Agreement:
    labels = run_labels(ctx)
    rows = data.method_agreement(ctx.ref, ctx.run_id)
    rows = rows[rows.other_run_id == other]
    pooled = rows[rows.target_id == AVERAGE_TARGET]
    caption = (f"Per class, the Spearman rank correlation of the two runs' rows e(· → a) on the same case, mean "
               f"over {int(rows.n_cases.max())} common cases with its 95 % bootstrap interval; all classes: "
               f"{pooled.spearman_mean.iloc[0]:.3f}." if len(pooled) else "") + _null_text(pooled)
    pair = f"{labels.get(ctx.run_id, ctx.run_id)} vs {labels.get(other, other)}"
    figure = figures.agreement_bars(rows, ctx.rois, labels.get(other, other), f"Method agreement · {pair}",
                                    ctx.provenance(int(rows.n_cases.max()), f"vs run {other}"))
    table = with_names(ctx, rows, **{"class": "target_id"})[["class", "spearman_mean", "spearman_low",
                                                             "spearman_high", "spearman_median", "n_cases"]]
    cells = data.method_disagreement(ctx.ref, ctx.run_id, other, 15)
    if len(cells):
        cells = with_names(ctx, cells, target="target_id", source="source_id")[
            ["target", "source", "mean_run", "mean_other", "difference", "mean_abs_difference"]].rename(
            columns={"mean_run": f"mean {ctx.method}", "mean_other": "mean other"})
    return Agreement(caption, figure, table, cells)


@dataclass
class Evaluation:
    """The evaluated runs' metrics and curves for the cohort (``empty``: why there is nothing)."""

    evaluated: tuple[str, ...]
    empty: str = ""
    table: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    curves_figure: go.Figure | None = None


def evaluation(ctx: ViewContext) -> Evaluation:
    evaluated = tuple(data.evaluated_runs(ctx.ref))
    if not evaluated:
        return Evaluation(evaluated)
    # Evaluation runs have cases of their own (not the selected run's): the cohort filter applies
    # to their case metadata; a store without matrix runs offers no filter, so none applies.
    cohort = ctx.cohort if ctx.n_run_cases else CohortFilter()
    summary = data.method_eval_summary(ctx.ref, evaluated, cohort)
    curves = data.perturbation_summary(ctx.ref, evaluated, cohort)
    if summary.empty and curves.empty:
        n_evaluated = data.evaluated_case_count(ctx.ref, evaluated)
        return Evaluation(evaluated, f"None of the {n_evaluated} evaluated case(s) passes the cohort filter. Widen "
                                     "the filter in the sidebar, or press **Reset filter**.")
    shown = Evaluation(evaluated)
    if not summary.empty:
        shown.table = analytics.method_table(summary, ctx.runs)
    if not curves.empty:
        shown.curves = curves
        shown.curves_figure = figures.perturbation_curves(
            curves, run_labels(ctx), "MoRF and LeRF perturbation curves",
            ctx.provenance(int(curves.n.max()), f"n = (case, class) pairs; {len(evaluated)} evaluated run(s)"))
    return shown
