"""Figures of the Quality page: expected vs true Dice per (case, class), risk-coverage curves with
their baselines, and the per-feature contributions of a flagged cell."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.base import LEGEND_TOP_RIGHT, base_layout

BASELINE_STYLE = {"oracle": dict(color="#1a9850", dash="dash"), "random": dict(color="#999999", dash="dot"),
                  "constant": dict(color="#7f7f7f", dash="dashdot")}
GROUP_COLOURS = {"uncertainty": "#7b3294", "explanation": "#2166ac", "volume": "#e08214"}


def estimate_truth_scatter(cells: pd.DataFrame, threshold: float, title: str, provenance: str) -> go.Figure:
    """True Dice (x) against expected Dice (y) of every labelled (case, class); flagged cells marked."""
    fig = go.Figure()
    for flagged, colour, name in ((False, "#4d4d4d", "not flagged"), (True, "#d6604d", "flagged (likely failure)")):
        part = cells[cells.likely_failure == flagged]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part.dice.tolist(), y=part.estimate.tolist(), mode="markers", name=name,
            marker=dict(color=colour, size=7, symbol="x" if flagged else "circle", opacity=0.8),
            customdata=np.stack([part.case_id, part["class"], part.low, part.high], axis=1),
            hovertemplate="case <b>%{customdata[0]}</b> · %{customdata[1]}<br>true %{x:.3f} · expected %{y:.3f} "
                          "[%{customdata[2]:.3f}, %{customdata[3]:.3f}]<extra></extra>"))
    lo = float(min(cells.dice.min(), cells.estimate.min(), threshold)) - 0.02 if len(cells) else 0.0
    fig.add_trace(go.Scatter(x=[lo, 1], y=[lo, 1], mode="lines", line=dict(color="#999", dash="dot"),
                             hoverinfo="skip", name="expected = true"))
    fig.add_hline(y=threshold, line=dict(color="#d6604d", width=1, dash="dash"))
    fig.add_vline(x=threshold, line=dict(color="#d6604d", width=1, dash="dash"))
    fig.update_xaxes(title_text="true Dice", range=[lo, 1.0])
    fig.update_yaxes(title_text="expected Dice (no labels used)", range=[lo, 1.0])
    return base_layout(fig, title, provenance, 480)


def risk_coverage_figure(curves: pd.DataFrame, aurc: dict[str, float], title: str, provenance: str) -> go.Figure:
    """One line per ranking: risk (mean 1 - Dice of the accepted cells) against coverage."""
    fig = go.Figure()
    for ranking, part in curves.groupby("ranking", sort=False):
        style = BASELINE_STYLE.get(ranking, {})
        fig.add_trace(go.Scatter(
            x=part.coverage.tolist(), y=part.risk.tolist(), mode="lines", name=f"{ranking} (AURC {aurc.get(ranking, np.nan):.4f})",
            line=dict(width=1.5 if style else 2.5, **style),
            hovertemplate=f"{ranking}<br>coverage %{{x:.2f}} · risk %{{y:.4f}}<extra></extra>"))
    fig.update_xaxes(title_text="coverage (share of cells accepted, most confident first)", range=[0, 1])
    fig.update_yaxes(title_text="risk (mean 1 − Dice of the accepted cells)", rangemode="tozero")
    fig.update_layout(legend=LEGEND_TOP_RIGHT)
    return base_layout(fig, title, provenance, 460)


def contribution_bars(table: pd.DataFrame, title: str, provenance: str) -> go.Figure:
    """Horizontal bars: each feature's linear term in the expected Dice (negative: lowers it)."""
    table = table.iloc[::-1]
    fig = go.Figure(go.Bar(
        x=table.contribution.tolist(), y=table.feature.tolist(), orientation="h",
        marker_color=[GROUP_COLOURS.get(g, "#4d4d4d") for g in table.feature_group],
        customdata=np.stack([table.feature_group, table.value], axis=1),
        hovertemplate="%{y} (%{customdata[0]})<br>standardised value %{customdata[1]:.2f}<br>"
                      "contribution %{x:+.4f} Dice<extra></extra>"))
    fig.update_xaxes(title_text="contribution to the expected Dice (Dice units)", zeroline=True)
    return base_layout(fig, title, provenance, max(280, 28 * len(table) + 140))
