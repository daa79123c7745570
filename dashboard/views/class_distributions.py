"""Class distributions: e(b → a) over the cohort's cases for every source b of one target class a."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.analysis.ordering import group_order
from agg2exp_core.vocabulary import MASS_KIND_TITLES
from dashboard import analytics, data, figures
from dashboard.analytics import Roi
from dashboard.context import ViewContext


@dataclass
class ClassDistributions:
    """One box per source RoI (anatomical-group order), the summary table and the whisker caption."""

    target: Roi
    kind: str
    title: str
    provenance: str
    empty: str = ""
    figure: go.Figure | None = None
    summary: pd.DataFrame | None = None
    caption: str = ""


def default_target(classes: list[Roi]) -> Roi | None:
    """The class the pages open on: the first after background."""
    return classes[1] if len(classes) > 1 else None


def class_distributions(ctx: ViewContext, target: Roi, kind: str, log_scale: bool = False) -> ClassDistributions:
    label = MASS_KIND_TITLES[kind]
    distribution = data.source_distribution(ctx.ref, ctx.run_id, ctx.cohort, target.roi_id, kind)
    boxes = distribution.boxes
    title = f"Importance of each source RoI for {target.name} ({label})"
    provenance = ctx.provenance(int(boxes.n.max()) if len(boxes) else 0)
    if boxes.empty:
        return ClassDistributions(target, kind, title, provenance, f"No {label} values of {target.name} for this cohort.")
    sources = [ctx.rois[i] for i in boxes.source_id if i in ctx.rois]
    sources = [sources[i] for i in group_order([s.grp for s in sources])]
    figure = figures.class_boxplot(boxes, distribution.points, sources, target, title, provenance, label, log_scale)
    summary = analytics.distribution_summary(boxes, "source_id", {s.roi_id: s.name for s in sources})
    order = {s.name: i for i, s in enumerate(sources)}      # rows in the boxes' order
    summary = summary.sort_values("roi", key=lambda c: c.map(order)).reset_index(drop=True)
    caption = analytics.whisker_caption(distribution.n_outside, len(distribution.points), data.POINTS_PER_SIDE)
    return ClassDistributions(target, kind, title, provenance, "", figure, summary, caption)


def dice_note(ctx: ViewContext, target: Roi) -> str:
    """The class's Dice over the cohort's cases in one line ("" without Dice)."""
    dice = data.dice_distribution(ctx.ref, ctx.run_id, ctx.cohort).boxes
    dice = dice[dice.class_id == target.roi_id]
    if dice.empty:
        return ""
    return (f"Dice of {target.name} over these cases: median {float(dice['median'].iloc[0]):.3f}, "
            f"IQR {float(dice.q1.iloc[0]):.3f}–{float(dice.q3.iloc[0]):.3f} (n = {int(dice.n.iloc[0])}).")
