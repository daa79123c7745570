"""The knowledge graph: the top sources b -> a of each target as a directed graph on a circle."""
from __future__ import annotations

import html
import math
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

from dashboard.analytics import Roi
from dashboard.figures.base import alpha, base_layout, group_legend


def knowledge_graph(nodes: Sequence[Roi], self_mass: dict[int, float], edges: pd.DataFrame,
                    positions: dict[int, tuple[float, float]], title: str, provenance: str) -> go.Figure:
    """Directed graph b -> a of the top sources per target; width ~ mass, node size ~ self mass."""
    fig = go.Figure()
    top = float(edges["mass"].max()) if len(edges) else 1.0
    mid_x, mid_y, mid_text = [], [], []
    pairs = set(zip(edges.source_id, edges.target_id)) if len(edges) else set()
    arrows = []
    for edge in edges.itertuples():
        (x0, y0), (x1, y1) = positions[edge.source_id], positions[edge.target_id]
        if (edge.target_id, edge.source_id) in pairs:      # both directions: offset to parallel lines
            dx, dy = y1 - y0, x0 - x1
            norm = math.hypot(dx, dy) or 1.0
            x0, y0, x1, y1 = (x0 + 0.025 * dx / norm, y0 + 0.025 * dy / norm,
                              x1 + 0.025 * dx / norm, y1 + 0.025 * dy / norm)
        source = next(n for n in nodes if n.roi_id == edge.source_id)
        target = next(n for n in nodes if n.roi_id == edge.target_id)
        width = 0.8 + 7.0 * edge.mass / top
        arrows.append(dict(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=max(0.6, 1.6 - width / 8), arrowwidth=width,
                           arrowcolor=alpha(source.color, 0.55), standoff=12, startstandoff=8))
        mid_x.append((x0 + x1) / 2)
        mid_y.append((y0 + y1) / 2)
        mid_text.append(f"{html.escape(source.name)} → {html.escape(target.name)}<br>mass {edge.mass:.4f} "
                        f"(rank {edge.rank} for {html.escape(target.name)})")
    fig.update_layout(annotations=arrows)      # once: add_annotation re-validates all earlier arrows
    fig.add_trace(go.Scatter(x=mid_x, y=mid_y, mode="markers", marker=dict(size=10, opacity=0),
                             hovertext=mid_text, hoverinfo="text", showlegend=False))
    xs = [positions[n.roi_id][0] for n in nodes]
    ys = [positions[n.roi_id][1] for n in nodes]
    sizes = [14 + 30 * float(self_mass.get(n.roi_id, 0.0)) for n in nodes]
    hover = [f"<b>{html.escape(n.name)}</b> ({n.grp})<br>" +
             (f"self mass e(a→a): {self_mass[n.roi_id]:.3f}" if n.roi_id in self_mass else "source only")
             for n in nodes]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=[n.name for n in nodes],
                             textposition=[_text_position(x, y) for x, y in zip(xs, ys)], hovertext=hover,
                             hoverinfo="text", showlegend=False,
                             marker=dict(size=sizes, color=[n.color for n in nodes],
                                         line=dict(color="white", width=1.5)),
                             textfont=dict(size=11)))
    group_legend(fig, [n.grp for n in nodes])
    fig.update_xaxes(visible=False, range=[-1.6, 1.6])
    fig.update_yaxes(visible=False, range=[-1.3, 1.3], scaleanchor="x")
    fig.update_layout(legend=dict(title="group", orientation="v"), plot_bgcolor="white")
    return base_layout(fig, title, provenance, 720)


def _text_position(x: float, y: float) -> str:
    vertical = "top" if y > 0.2 else ("bottom" if y < -0.2 else "middle")
    horizontal = "right" if x > 0.2 else ("left" if x < -0.2 else "center")
    return f"{vertical} {horizontal}" if vertical != "middle" or horizontal != "center" else "top center"
