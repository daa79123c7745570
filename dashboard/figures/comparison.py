"""The comparison heat map of two cohorts: a ``PermutationResult`` drawn as mean(A) − mean(B) on a
symmetric diverging scale, significant cells dotted, each cell's means, p and q in the hover."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from agg2exp_core.analysis.compare import PermutationResult
from agg2exp_core.analysis.uncertainty import Interval
from dashboard.figures.base import DIVERGING, LEGEND_TOP_RIGHT, base_layout, fmt, signed_bound
from dashboard.figures.heatmap import add_intervals, cell_axes, cell_heatmap, colorbar, height_for, texts


def difference_heatmap(result: PermutationResult, targets: Sequence, sources: Sequence, labels: tuple[str, str],
                       title: str, provenance: str, interval: Interval | None = None) -> go.Figure:
    """Mean(A) − mean(B) per cell (``labels``: the names of A and B); with ``interval``, each cell's
    interval of the difference in the hover."""
    label_a, label_b = labels
    q_label = "q (BH)" if result.fdr else "p"
    columns = [texts(result.mean_a, fmt), texts(result.mean_b, fmt), texts(result.p_values, lambda v: fmt(v, 3)),
               texts(result.q_values, lambda v: fmt(v, 3))]
    lines = (f"difference: %{{z:.4f}}<br>{html.escape(label_a)}: %{{customdata[2]}}<br>"
             f"{html.escape(label_b)}: %{{customdata[3]}}<br>p: %{{customdata[4]}}"
             + (f"<br>{q_label}: %{{customdata[5]}}" if result.fdr else ""))
    bound = signed_bound(result.difference)
    fig = go.Figure(cell_heatmap(result.difference, targets, sources, columns, lines, colorscale=DIVERGING, zmid=0,
                                 zmin=-bound, zmax=bound, colorbar=colorbar(f"mean({label_a}) − mean({label_b})")))
    rows, cols = np.nonzero(result.significant)
    fig.add_trace(go.Scatter(x=cols.tolist(), y=rows.tolist(), mode="markers", hoverinfo="skip",
                             name=f"{q_label} < alpha", marker=dict(symbol="circle", size=9, color="black",
                                                                     line=dict(color="white", width=1))))
    cell_axes(fig, targets, sources)
    fig.update_layout(showlegend=True, legend=LEGEND_TOP_RIGHT, plot_bgcolor="white")
    if interval is not None:
        add_intervals(fig, interval.low, interval.high, "95 % CI of the difference")
    return base_layout(fig, title, provenance, height_for(len(targets)))
