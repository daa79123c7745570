"""Failure-slice figures: the Dice of a slice's cases against the rest (box and points), and the
cells whose mass differs between them."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.bars import signed_cell_bars
from dashboard.figures.base import base_layout

IN_COLOR, OUT_COLOR = "#b2182b", "#737373"


def slice_dice_strip(dice: pd.DataFrame, dice_label: str, title: str, provenance: str) -> go.Figure:
    """Box with every case as a point, one for the slice and one for the rest (``dice``: case_id, in_slice, dice)."""
    fig = go.Figure()
    for inside, name, color in ((True, "in the slice", IN_COLOR), (False, "the rest", OUT_COLOR)):
        part = dice[dice.in_slice == inside]
        fig.add_trace(go.Box(y=part.dice, x=[name] * len(part), name=f"{name} (n = {len(part)})", boxpoints="all",
                             jitter=0.45, pointpos=0, marker=dict(color=color, size=6, opacity=0.75),
                             line=dict(color=color), customdata=part[["case_id"]].to_numpy(),
                             hovertemplate="case %{customdata[0]}<br>" + dice_label + " %{y:.3f}<extra></extra>"))
    fig.update_yaxes(title_text=dice_label, range=[0, 1.02])
    fig.update_xaxes(title_text="")
    return base_layout(fig, title, provenance, 440)


def slice_cell_bars(cells: pd.DataFrame, value_label: str, title: str, provenance: str) -> go.Figure:
    """Mean mass in the slice minus the rest per cell (``cells``: target, source, difference, q_value)."""
    labels = [f"{s} → {t}" for t, s in zip(cells.target, cells.source)]
    fig = signed_cell_bars(labels, cells.difference, cells.mean_in, cells.mean_out, cells.q_value,
                           ("difference %{x:.4f}", "slice mean", "rest mean"), f"{value_label}: slice − rest")
    return base_layout(fig, title, provenance, max(320, 80 + 28 * len(cells)))
