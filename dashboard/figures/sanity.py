"""The sanity checks' figure: similarity of the trained and the randomised model's maps against the
cascading depth, one curve per method, each with its baseline band (Adebayo et al. 2018, Fig. 2)."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.base import LEGEND_TOP_RIGHT, alpha, base_layout

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#9d755d"]


def randomisation_curves(curves: pd.DataFrame, labels: dict[str, str], metric_title: str, title: str,
                         provenance: str) -> go.Figure:
    """Per run: its baseline band (the range of the classes' baselines, drawn across the depths) and the mean
    similarity (markers: the range over cases and classes in the hover) against the fraction of layers
    randomised from the output (0 = trained, 1 = fully randomised). ``labels``: run id -> legend name."""
    fig = go.Figure()
    for k, (run_id, part) in enumerate(curves.groupby("run_id", sort=True)):
        part = part.sort_values("step")
        colour, name = PALETTE[k % len(PALETTE)], labels.get(run_id, run_id)
        low, high = float(part.baseline_low.min()), float(part.baseline_high.max())
        fig.add_trace(go.Scatter(x=[0, 1, 1, 0], y=[low, low, high, high], fill="toself",
                                 fillcolor=alpha(colour, 0.15), line=dict(width=0), name=f"{name}: baseline",
                                 legendgroup=run_id, hovertemplate=f"baseline {low:.3f} – {high:.3f}"
                                 f"<extra>{html.escape(name)}</extra>"))
        fig.add_trace(go.Scatter(x=part.depth, y=part["mean"], mode="lines+markers", name=name,
                                 legendgroup=run_id, line=dict(color=colour, width=2),
                                 customdata=np.column_stack([part.step, part.layer.fillna(""), part.low, part.high,
                                                             part.n]),
                                 hovertemplate=("step %{customdata[0]}: down to %{customdata[1]}<br>mean %{y:.3f}"
                                                "<br>range %{customdata[2]:.3f} – %{customdata[3]:.3f}<br>"
                                                "n %{customdata[4]}<extra>" + html.escape(name) + "</extra>")))
    fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"))
    fig.update_xaxes(title_text="layers randomised, from the output (0 trained, 1 all)", range=[-0.03, 1.03])
    fig.update_yaxes(title_text=f"{metric_title}, trained vs randomised")
    fig.update_layout(legend=LEGEND_TOP_RIGHT)
    return base_layout(fig, title, provenance, 440)
