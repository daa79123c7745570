"""Overview: the cohort's case counts, Dice per class, the run's provenance and the store's runs."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from dashboard import analytics, data, figures
from dashboard.context import ViewContext


@dataclass
class Overview:
    provenance: pd.DataFrame
    failures: str
    runs: pd.DataFrame
    missing: str = ""                       # what the cohort does not record (sex, age)
    counts_figure: go.Figure | None = None
    counts: pd.DataFrame | None = None
    dice_figure: go.Figure | None = None
    dice_caption: str = ""
    dice_summary: pd.DataFrame | None = None


def overview(ctx: ViewContext) -> Overview:
    n_failures = int(ctx.run["n_failures"])
    shown = Overview(analytics.run_provenance(ctx.run),
                     f"{n_failures} case(s) failed in this run and have no results." if n_failures else "",
                     analytics.runs_table(ctx.runs))
    if ctx.cases.empty:
        return shown
    missing = [w for w, ok in (("sex", ctx.options.sex_recorded), ("age", ctx.options.age_recorded)) if not ok]
    if missing:
        shown.missing = (f"This cohort has no {' and no '.join(missing)} recorded (e.g. the published TSV2 "
                         "aggregates); filters and comparisons by them are not offered.")
    counts = analytics.case_counts(ctx.cases)
    shown.counts_figure = figures.counts_bars(counts, "Cases by dataset, split, sex and age band", ctx.provenance())
    shown.counts = analytics.counts_long(counts)
    dice = data.dice_distribution(ctx.ref, ctx.run_id, ctx.cohort)
    if not dice.boxes.empty:
        classes = [r for r in ctx.class_rois() if r.roi_id in set(dice.boxes.class_id)]
        shown.dice_figure = figures.dice_boxes(dice.boxes, dice.points, classes, "Dice per class",
                                               ctx.provenance(int(dice.boxes.n.max())))
        shown.dice_caption = analytics.whisker_caption(dice.n_outside, len(dice.points), data.POINTS_PER_SIDE)
        shown.dice_summary = analytics.dice_summary(dice.boxes, classes)
    return shown
