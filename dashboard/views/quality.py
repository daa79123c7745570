"""Quality: which cases and classes of a cohort did the model probably get wrong, and how far can
that ranking be trusted? Expected vs true Dice, risk-coverage against baselines, the feature-set
ablation, the flagged (case, class) list and the contributions of one flagged cell."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from dashboard import data_quality as data, figures
from dashboard.context import ViewContext
from dashboard.views.common import target_name, with_names

ABLATION_METRICS = {"spearman_case_mean": "Spearman (case mean)", "mae": "MAE", "mae_constant": "MAE class means",
                    "auroc": "AUROC (Dice < threshold)", "aurc": "AURC", "coverage_class": "coverage",
                    "coverage_worst_class": "worst class coverage"}
SET_ORDER = ("all", "explanation+uncertainty", "uncertainty", "explanation", "volume", "constant")


@dataclass
class QualitySetup:
    scopes: list[str]
    ablation: pd.DataFrame
    threshold: float | None


def setup(ctx: ViewContext) -> QualitySetup:
    ablation = data.quality_ablation(ctx.ref, ctx.run_id)
    scopes = sorted(ablation.scope.unique().tolist()) if len(ablation) else []
    flagged = data.flagged_cells(ctx.ref, ctx.run_id)
    truth = data.estimate_truth(ctx.ref, ctx.run_id)
    threshold = None
    for frame in (flagged, truth):
        if threshold is None and "failure_below" in frame and len(frame):
            threshold = float(frame.failure_below.iloc[0])
    return QualitySetup(scopes, ablation, threshold)


def _in_cohort(ctx: ViewContext, frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.case_id.isin(ctx.cases.case_id)] if len(frame) else frame


@dataclass
class EstimatePanel:
    figure: go.Figure | None
    table: pd.DataFrame
    caption: str


def estimate_panel(ctx: ViewContext, threshold: float) -> EstimatePanel:
    """Expected against true Dice of the cohort's labelled cells (none labelled: no figure)."""
    truth = data.estimate_truth(ctx.ref, ctx.run_id)
    cells = with_names(ctx, _in_cohort(ctx, truth), **{"class": "class_id"})
    if cells.empty:
        return EstimatePanel(None, cells, "No case of this cohort has true Dice: nothing to compare with.")
    failed = cells.dice < threshold
    caption = (f"{len(cells)} labelled (case, class) cells of {cells.case_id.nunique()} cases; "
               f"{int(cells.likely_failure.sum())} flagged (expected Dice < {threshold:g}), "
               f"{int((cells.likely_failure & failed).sum())} of them truly below {threshold:g}; "
               f"{int(failed.sum())} cells truly below {threshold:g}. Fitted cases' estimates are out-of-fold.")
    figure = figures.estimate_truth_scatter(cells, threshold, "Expected vs true Dice per case and class",
                                            ctx.provenance(cells.case_id.nunique()))
    table = cells[["case_id", "dataset", "class", "estimate", "low", "high", "dice", "likely_failure", "fitted"]]
    return EstimatePanel(figure, table, caption)


@dataclass
class RiskPanel:
    figure: go.Figure | None
    aurc: pd.DataFrame
    caption: str


def risk_panel(ctx: ViewContext, scope: str) -> RiskPanel:
    """The stored risk-coverage curves of one scope (a dataset, or the fit cases' nested CV)."""
    curves = data.risk_coverage(ctx.ref, ctx.run_id, scope)
    if curves.empty:
        return RiskPanel(None, curves, "No risk-coverage curves stored for this scope.")
    aurc = curves.groupby("ranking", sort=False).risk.mean()
    table = aurc.rename("aurc").reset_index().sort_values("aurc").reset_index(drop=True)
    figure = figures.risk_coverage_figure(curves, aurc.to_dict(), f"Risk-coverage · {scope}",
                                          ctx.provenance(1, f"{int(curves.position.max())} cells, scope {scope}"))
    caption = ("Cells sorted by a ranking's confidence (the expected Dice of a feature set, high first; the "
               "uncertainty baseline: the one uncertainty feature that ranks the fit cases best); the risk at a "
               "coverage is the mean 1 − Dice of the cells accepted. AURC: the mean risk (lower is better); "
               "oracle: the true ranking (the smallest AURC possible), random: its expectation (the mean loss).")
    return RiskPanel(figure, table, caption)


def ablation_table(setup_: QualitySetup, scope: str) -> pd.DataFrame:
    """Feature sets (rows) by metric (columns) in one scope; baselines carry their AURC only."""
    part = setup_.ablation[setup_.ablation.scope == scope]
    if part.empty:
        return pd.DataFrame(columns=["feature set", *ABLATION_METRICS.values()])
    wide = part.pivot_table(index="feature_set", columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(ABLATION_METRICS)).rename(columns=ABLATION_METRICS)
    order = [s for s in SET_ORDER if s in wide.index] + sorted(s for s in wide.index if s not in SET_ORDER)
    return wide.loc[order].rename_axis("feature set").rename_axis(columns=None).reset_index()


def flagged_list(ctx: ViewContext) -> pd.DataFrame:
    """The cohort's flagged (case, class) cells, lowest expected Dice first."""
    flagged = _in_cohort(ctx, data.flagged_cells(ctx.ref, ctx.run_id))
    if flagged.empty:
        return flagged
    named = with_names(ctx, flagged, **{"class": "class_id"})
    return named[["case_id", "dataset", "class", "class_id", "estimate", "low", "high", "dice", "fitted"]]


def cell_label(row: pd.Series) -> str:
    return f"{row.case_id} · {row['class']} (expected {row.estimate:.3f})"


@dataclass
class ContributionPanel:
    figure: go.Figure | None
    table: pd.DataFrame
    caption: str


def contribution_panel(ctx: ViewContext, case_id: str, class_id: int) -> ContributionPanel:
    table = data.quality_contributions(ctx.ref, ctx.run_id, case_id, class_id)
    name = target_name(ctx, class_id)
    if table.empty:
        return ContributionPanel(None, table, "No contributions stored for this cell (the constant model has none).")
    figure = figures.contribution_bars(table, f"Why flagged · case {case_id} · {name}",
                                       ctx.provenance(1, f"case {case_id}"))
    caption = (f"Linear terms of the quality model (Ridge on standardised features): each bar is how far the "
               f"feature moves {name}'s expected Dice from its class mean, in Dice units (sum "
               f"{table.contribution.sum():+.3f}); colours: uncertainty, explanation, volume. The model is the one "
               "fitted on every fit case; a fitted case's shown estimate is out-of-fold, so the sum can differ.")
    return ContributionPanel(figure, table, caption)
