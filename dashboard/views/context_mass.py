"""Context mass: 1 − e(a → a) per class, one box per dataset."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.analysis.ordering import group_order
from dashboard import analytics, data, figures
from dashboard.context import ViewContext


@dataclass
class ContextMass:
    empty: str = ""
    figure: go.Figure | None = None
    caption: str = ""
    summary: pd.DataFrame | None = None


def context_mass(ctx: ViewContext) -> ContextMass:
    distribution = data.context_mass_distribution(ctx.ref, ctx.run_id, ctx.cohort)
    boxes = distribution.boxes
    if boxes.empty:
        return ContextMass("No self mass e(a → a) for this cohort.")
    classes = [r for r in ctx.class_rois() if r.roi_id in set(boxes.target_id)]
    classes = [classes[i] for i in group_order([c.grp for c in classes])]
    n_cases = int(boxes.groupby("target_id")["n"].sum().max())
    figure = figures.context_mass_boxes(boxes, distribution.points, classes, "Context mass per class and dataset",
                                        ctx.provenance(n_cases))
    return ContextMass("", figure,
                       analytics.whisker_caption(distribution.n_outside, len(distribution.points), data.POINTS_PER_SIDE),
                       analytics.context_mass_summary(boxes, classes))
