"""Failure modes: the subgroups on which the model's Dice drops (``analyze --slices``), and why."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import data, figures
from dashboard.text import literal
from dashboard.context import ViewContext
from dashboard.views.common import dice_label, target_name
from dashboard.views.outliers import case_link

NO_SLICES = ("This run has no failure-slice search. Compute it with `python -m agg2exp_core analyze --db STORE "
             "--run RUN --slices` (after the expected Dice, so unlabelled classes are searched too).")
TABLE_COLUMNS = ["rank", "slice", "source", "n", "Dice drop", "p", "q", "Dice from"]


@dataclass
class ClassSlices:
    """The ranked slices of one class as the page's table (``slice_ids`` in the table's order)."""

    name: str
    table: pd.DataFrame
    slice_ids: list[int]
    caption: str = ""

    def label(self, slice_id: int) -> str:
        row = self.table.iloc[self.slice_ids.index(slice_id)]
        return f"#{row['rank']} {row['slice']} (n = {row['n']})"


@dataclass
class SliceDetail:
    heading: str
    caption: str
    members: pd.DataFrame
    dice_figure: go.Figure | None = None
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    cells_figure: go.Figure | None = None
    reasons: pd.DataFrame = field(default_factory=pd.DataFrame)
    target_id: int = AVERAGE_TARGET


def slice_classes(ctx: ViewContext) -> dict[int, str]:
    """Classes with failure slices (over all classes first), with their names; empty without a search."""
    stored = data.failure_slices(ctx.ref, ctx.run_id)
    return {int(c): target_name(ctx, int(c)) for c in sorted(stored.class_id.unique())}


def class_slices(ctx: ViewContext, class_id: int) -> ClassSlices:
    stored = data.failure_slices(ctx.ref, ctx.run_id)
    rows = stored[stored.class_id == class_id].sort_values("rank")
    table = pd.DataFrame({"rank": rows["rank"].astype(int), "slice": rows.description, "source": rows.source,
                          "n": rows.n.astype(int), "Dice drop": rows.effect.round(4), "p": rows.p_value,
                          "q": rows.q_value, "Dice from": rows.uses_labels.map({True: "labels",
                                                                                False: "expected Dice"})})
    name = target_name(ctx, class_id)
    caption = (f"{len(rows)} slice(s) for {name}: Dice drop = mean Dice of the rest − mean Dice of the slice; "
               "p: one-sided rank-sum test; q: Benjamini-Hochberg over every candidate of every class. Slices "
               "overlapping a better-ranked one by Jaccard > 0.5 are left out. The search ran over the run's "
               "cases (`analyze --slices` leaves the model's training split out unless told otherwise: its Dice is "
               "in-sample; the demo searches every case): the sidebar's cohort filter does not change it.")
    return ClassSlices(name, table.reset_index(drop=True), rows.slice_id.astype(int).tolist(), caption)


def slice_detail(ctx: ViewContext, class_id: int, slice_id: int, description: str) -> SliceDetail:
    detail = data.failure_slice_detail(ctx.ref, ctx.run_id, slice_id)
    members = detail["members"].assign(case_viewer=lambda f: f.case_id.map(
        lambda c: "case_viewer?" + "&".join(f"{k}={v}" for k, v in case_link(ctx, c, class_id).items())))
    dice, label = detail["dice"], dice_label(ctx, class_id)
    # The description holds metadata values from the manifest: shown literally, never as Markdown.
    out = SliceDetail(f"Slice: {literal(description)}", _dice_caption(dice), members, target_id=class_id)
    if len(dice):
        out.dice_figure = figures.slice_dice_strip(dice, label, f"{label} · {description} vs the rest",
                                                   ctx.provenance(len(dice)))
    cells = detail["cells"]
    if len(cells):
        out.cells = cells[["target", "source", "mean_in", "mean_out", "difference", "p_value", "q_value"]]
        out.cells_figure = figures.slice_cell_bars(cells, "mean volume-adjusted mass (lift)",
                                                   f"Cells that differ · {description}",
                                                   ctx.provenance(extra="Welch permutation test, BH over the cells"))
    out.reasons = detail["reasons"][["target", "source", "contribution", "n_cases"]] if len(detail["reasons"]) else \
        detail["reasons"]
    return out


def _dice_caption(dice: pd.DataFrame) -> str:
    inside, rest = dice[dice.in_slice], dice[~dice.in_slice]
    if not len(inside) or not len(rest):
        return "No Dice stored for this slice's cases."
    return (f"Mean Dice {inside.dice.mean():.3f} in the slice (n = {len(inside)}) against {rest.dice.mean():.3f} "
            f"in the rest (n = {len(rest)}).")
