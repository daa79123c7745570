"""The matrix heat map of a ``MatrixView``: mean importance per cell, optional log scale, per-cell
case counts, intervals and the dendrograms of a clustered order."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from agg2exp_core.analysis.ordering import ClusterOrder
from dashboard.figures.base import LOG_FLOOR, SEQUENTIAL, base_layout
from dashboard.figures.heatmap import (add_intervals, cell_axes, cell_heatmap, colorbar, counts_text,
                                       height_for, texts)
from dashboard.matrices import CellIntervals, MatrixView


def matrix_heatmap(view: MatrixView, title: str, provenance: str, value_label: str = "mass",
                   log_scale: bool = False, intervals: CellIntervals | None = None,
                   interval_label: str = "95 % CI", with_counts: bool = True, with_trees: bool = True,
                   height: int | None = None) -> go.Figure:
    """Target (rows) x source (columns) matrix in the view's order; its dendrograms when the order is
    a clustering (and ``with_trees``), each cell's case count and interval in the hover."""
    values = np.asarray(view.matrix, dtype=float)
    z = np.log10(np.clip(values, LOG_FLOOR, None)) if log_scale else values
    counts = view.counts if with_counts else None
    lines = f"{value_label}: %{{text}}" + ("<br>n cases: %{customdata[2]}" if counts is not None else "")
    bar = colorbar(value_label + (" (log)" if log_scale else ""))
    finite = values[np.isfinite(values)]
    # fractions end at 1 (log 0); a lift (mass / volume share) goes above it
    top = max(0, math.ceil(math.log10(finite.max()))) if log_scale and finite.size and finite.max() > 0 else 0
    if log_scale:
        ticks = list(range(int(math.log10(LOG_FLOOR)), top + 1))
        bar.update(tickvals=ticks, ticktext=[f"{10.0 ** k:g}" for k in ticks])
    heat = cell_heatmap(z, view.targets, view.sources, [counts_text(counts, values.shape)], lines,
                        text=texts(values, lambda v: "n/a" if not np.isfinite(v) else f"{v:.4f}"),
                        colorscale=SEQUENTIAL, colorbar=bar, zmin=math.log10(LOG_FLOOR) if log_scale else 0.0,
                        zmax=float(top) if log_scale else None)
    if with_trees and view.has_trees:
        fig, where, label_side = _with_dendrograms(heat, view, value_label), dict(row=2, col=2), "right"
    else:
        fig, where, label_side = go.Figure(heat), {}, "left"
    cell_axes(fig, view.targets, view.sources, label_side=label_side, **where)
    fig.update_layout(showlegend=False, plot_bgcolor="white")
    if intervals is not None:
        add_intervals(fig, intervals.low, intervals.high, interval_label)
    return base_layout(fig, title, provenance, height or height_for(len(view.targets)))


def _with_dendrograms(heat: go.Heatmap, view: MatrixView, value_label: str) -> go.Figure:
    """Dendrograms left (rows) and on top (columns); row labels move to the right of the cells and
    the colour bar into the free top-left corner."""
    fig = make_subplots(rows=2, cols=2, column_widths=[0.14, 0.86], row_heights=[0.14, 0.86],
                        shared_xaxes=True, horizontal_spacing=0.004, vertical_spacing=0.004)
    heat.update(colorbar=dict(heat.colorbar.to_plotly_json(), orientation="h", x=0.0, xanchor="left", y=1.0,
                              yanchor="top", len=0.13, thickness=10, title=dict(text=value_label, side="top")))
    fig.add_trace(heat, row=2, col=2)
    _add_dendrogram(fig, view.column_tree, row=1, col=2, horizontal=False)
    _add_dendrogram(fig, view.row_tree, row=2, col=1, horizontal=True)
    for row, col in ((1, 2), (2, 1)):
        fig.update_xaxes(visible=False, row=row, col=col)
        fig.update_yaxes(visible=False, row=row, col=col)
    fig.update_yaxes(range=[len(view.targets) - 0.5, -0.5], row=2, col=1)
    return fig


def _add_dendrogram(fig: go.Figure, tree: ClusterOrder, row: int, col: int, horizontal: bool) -> None:
    """Dendrogram segments aligned with heat-map cells (leaf k at cell k)."""
    xs, ys = [], []
    for icoord, dcoord in zip(tree.icoord, tree.dcoord):
        positions = [(p - 5.0) / 10.0 for p in icoord]
        if horizontal:
            xs += [-d for d in dcoord] + [None]
            ys += positions + [None]
        else:
            xs += positions + [None]
            ys += list(dcoord) + [None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#555", width=1), hoverinfo="skip",
                             showlegend=False), row=row, col=col)
