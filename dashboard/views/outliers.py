"""Outliers: the anomaly ranking of one class with expected Dice, why a case is an outlier, anomaly vs
Dice, the inlier-vs-outlier tests and the parity with the paper's Table 2."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.analysis import paper
from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import analytics, compute, data, figures
from dashboard.context import ViewContext
from dashboard.views.common import dice_label, target_name, with_case_fields


def targets(ctx: ViewContext) -> list[int]:
    """The classes with anomaly scores (``AVERAGE_TARGET`` among them when the run has it)."""
    return data.anomaly_targets(ctx.ref, ctx.run_id)


def target_for(ctx: ViewContext, roi_id: int) -> int | None:
    """The anomaly target shown for a chosen class: itself, else the average over classes, else the first."""
    scored = targets(ctx)
    if not scored:
        return None
    return roi_id if roi_id in scored else (AVERAGE_TARGET if AVERAGE_TARGET in scored else scored[0])


@dataclass
class Ranking:
    """The cohort's cases by anomaly score for one class, with the scatter against Dice."""

    target_id: int
    name: str
    dice_label: str
    ranking: pd.DataFrame
    empty: str = ""
    figure: go.Figure | None = None
    settings: str = ""            # how the forests were fitted
    estimate: str = ""            # what the expected Dice is, and how many cases it flags
    spearman: str = ""            # anomaly vs Dice over the whole run, in one line

    @property
    def has_estimate(self) -> bool:
        return "expected_dice" in self.ranking

    def top(self, n: int) -> pd.DataFrame:
        """The ``n`` most anomalous cases (the report's ranking table)."""
        return self.ranking.head(n)[["rank", "case_id", "score", "is_outlier", "dice", "dataset", "sex", "age",
                                     "pathologies"]].reset_index(drop=True)


def ranking(ctx: ViewContext, target_id: int) -> Ranking:
    name, label = target_name(ctx, target_id), dice_label(ctx, target_id)
    ranked = with_case_fields(ctx, compute.outlier_ranking(ctx.ref, ctx.run_id, ctx.cohort, target_id))
    if ranked.empty:
        return Ranking(target_id, name, label, ranked, "No anomaly scores for the cases of this cohort.")
    figure = figures.anomaly_scatter(ranked, f"Anomaly score vs Dice · {name}", ctx.provenance(len(ranked)), label)
    shown = Ranking(target_id, name, label, ranked, figure=figure, settings=_settings(ctx), spearman=_spearman(ctx, target_id))
    if shown.has_estimate:
        shown.estimate = (f"Expected Dice: estimated without labels from the case's explanations and prediction "
                          f"(80 % interval), fitted on labelled reference cases; {int(ranked.likely_failure.sum())} "
                          "case(s) of this cohort flagged as likely failures (expected Dice below the reference "
                          "cases' 10th percentile).")
    return shown


def _settings(ctx: ViewContext) -> str:
    settings = data.analysis_settings(ctx.ref, ctx.run_id)
    if not settings:
        return ""
    return (f"Forests: {settings.get('n_estimators')} trees, contamination {settings.get('contamination')}, "
            f"absent classes {'dropped' if settings.get('absent') == 'drop' else 'scored as zero rows'}; "
            f"score: {settings.get('score_convention')}.")


def _spearman(ctx: ViewContext, target_id: int) -> str:
    table = data.anomaly_dice(ctx.ref, ctx.run_id)
    row = table[table.target_id == target_id]
    if row.empty:
        return ""
    return (f"Spearman ρ (anomaly vs Dice, whole run): {float(row.spearman_rho.iloc[0]):.3f}, "
            f"p = {float(row.p_value.iloc[0]):.3g}, n = {int(row.n.iloc[0])}.")


@dataclass
class Reasons:
    """The cells that push one case's anomaly score most."""

    table: pd.DataFrame
    figure: go.Figure | None = None
    caption: str = ""


def reasons(ctx: ViewContext, case_id: str, target_id: int) -> Reasons:
    table = compute.reason_table(ctx.ref, ctx.run_id, case_id, target_id)
    if table.empty:
        return Reasons(table)
    name = target_name(ctx, target_id)
    figure = figures.reason_bars(table, f"Top outlier cells · case {case_id} · {name}",
                                 ctx.provenance(1, f"case {case_id}"))
    caption = ("The matrix cells that push the case's anomaly score most: SHAP values of the class's Isolation "
               "Forest (TreeExplainer), as the shortening of the isolation path they cause, in tree depths."
               + (" Over every class." if target_id == AVERAGE_TARGET else ""))
    return Reasons(table, figure, caption)


@dataclass
class ExpectedDice:
    figure: go.Figure
    quality: pd.DataFrame
    caption: str


def expected_dice(ctx: ViewContext, shown: Ranking) -> ExpectedDice | None:
    """Expected vs true Dice where both are known (None without estimates or true Dice)."""
    if not (shown.has_estimate and shown.ranking.dice.notna().any()):
        return None
    quality = data.dice_estimate_quality(ctx.ref, ctx.run_id)
    caption = ("Where the truth is known (validation of the estimate, whole run): " + "; ".join(
        f"{scope}: Spearman {group.set_index('metric').value.get('spearman_case_mean', float('nan')):.2f}, "
        f"coverage {group.set_index('metric').value.get('coverage_class', float('nan')):.0%}"
        for scope, group in quality.groupby("scope")) + ". Estimates of fitted cases are out-of-fold, their "
        "intervals nested (out-of-sample). Intervals are per-class conformal (CV+): their coverage holds for cases "
        "like the fit cases; on a shifted dataset (another scanner, site or population) it is not guaranteed, see "
        "that dataset's coverage above.") \
        if len(quality) else ""
    figure = figures.expected_dice_scatter(shown.ranking, f"Expected vs true Dice · {shown.name}",
                                           ctx.provenance(len(shown.ranking)), shown.dice_label)
    return ExpectedDice(figure, quality, caption)


def spearman_table(ctx: ViewContext) -> pd.DataFrame:
    table = data.anomaly_dice(ctx.ref, ctx.run_id).copy()
    if table.empty:
        return table
    table.insert(0, "class", table.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)))
    return table.drop(columns="target_id")


def outlier_tests(ctx: ViewContext) -> pd.DataFrame:
    tests = data.outlier_tests(ctx.ref, ctx.run_id)
    if tests.empty:
        return tests
    tests = analytics.adjusted_tests(tests).copy()
    tests.insert(0, "class", tests.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)))
    return tests.drop(columns="target_id")


def paper_parity(ctx: ViewContext) -> pd.DataFrame:
    """The stored parity table with Holm / BH adjustments of its per-label p-values beside the raw ones."""
    parity = data.paper_parity(ctx.ref, ctx.run_id)
    return paper.with_adjusted_p(parity).drop(columns="target_id") if len(parity) else parity


def case_link(ctx: ViewContext, case_id: str, target_id: int) -> dict[str, str]:
    """URL parameters of the case viewer opened on a case (on the class, unless the average was shown)."""
    params = {"case": case_id}
    if target_id != AVERAGE_TARGET:
        params["target"] = target_name(ctx, target_id)
    return params
