"""The signed heat map of causal effects (a ``SignedMatrix``: ATE per cell with its SE and n) on a
diverging scale centred at 0: red, the region's real content supports the class; blue, it opposes it."""
from __future__ import annotations

import html

import plotly.graph_objects as go

from dashboard.figures.base import DIVERGING, base_layout, signed_bound, signed_text
from dashboard.figures.heatmap import cell_axes, cell_heatmap, colorbar, counts_text, height_for, texts
from dashboard.matrices import SignedLabels, SignedMatrix


def signed_heatmap(signed: SignedMatrix, title: str, provenance: str, labels: SignedLabels = SignedLabels(),
                   height: int | None = None) -> go.Figure:
    """Signed target x source matrix, value ± SE and n on hover. Sources may be RoIs (coloured ticks)
    or plain names (e.g. network components)."""
    columns = [texts(signed.value, signed_text), texts(signed.se, lambda v: signed_text(v, signed=False)),
               counts_text(signed.counts, signed.value.shape)]
    lines = (f"{html.escape(labels.value)}: %{{customdata[2]}}<br>{html.escape(labels.se)}: %{{customdata[3]}}"
             + (f"<br>{html.escape(labels.count)}: %{{customdata[4]}}" if signed.counts is not None else ""))
    bound = signed_bound(signed.value)
    fig = go.Figure(cell_heatmap(signed.value, signed.targets, signed.sources, columns, lines, colorscale=DIVERGING,
                                 zmid=0.0, zmin=-bound, zmax=bound,
                                 colorbar=colorbar(f"{labels.value} (+ supports, − opposes)")))
    cell_axes(fig, signed.targets, signed.sources, column_title=labels.column_title)
    fig.update_layout(showlegend=False, plot_bgcolor="white")
    return base_layout(fig, title, provenance, height or height_for(len(signed.targets)))
