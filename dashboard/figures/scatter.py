"""Scatter and curve figures: anomaly vs Dice, expected vs true Dice, perturbation (MoRF/LeRF) curves."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from plotly.subplots import make_subplots

from dashboard.figures.base import LEGEND_TOP_RIGHT, alpha, base_layout, fmt


def anomaly_scatter(ranking: pd.DataFrame, title: str, provenance: str, dice_label: str) -> go.Figure:
    """Anomaly score vs Dice, outliers in red, one symbol per dataset."""
    fig = go.Figure()
    symbols = ["circle", "diamond", "square", "triangle-up", "cross"]
    for k, (dataset, part) in enumerate(ranking.groupby("dataset", sort=True)):
        for outlier, colour, label in ((False, "#4c78a8", "inlier"), (True, "#d62728", "outlier")):
            sub = part[part.is_outlier.fillna(False).astype(bool) == outlier]
            if sub.empty:
                continue
            custom = np.column_stack([sub.case_id, sub.sex.fillna("unknown"),
                                      sub.age.map(lambda a: "unknown" if pd.isna(a) else f"{a:g}"), sub["rank"]])
            fig.add_trace(go.Scatter(
                x=sub.score, y=sub.dice, mode="markers", name=f"{dataset} · {label}",
                marker=dict(color=colour, symbol=symbols[k % len(symbols)], size=8, opacity=0.8,
                            line=dict(color="white", width=0.5)),
                customdata=custom,
                hovertemplate=("case <b>%{customdata[0]}</b> (rank %{customdata[3]})<br>sex %{customdata[1]}, "
                               "age %{customdata[2]}<br>anomaly %{x:.3f}<br>Dice %{y:.3f}<extra></extra>")))
    fig.update_xaxes(title_text="anomaly score (higher = more anomalous)")
    fig.update_yaxes(title_text=dice_label)
    fig.update_layout(legend=dict(title="dataset · outlier?"))
    return base_layout(fig, title, provenance, 480)


def expected_dice_scatter(ranking: pd.DataFrame, title: str, provenance: str, dice_label: str) -> go.Figure:
    """Expected Dice (with its interval) vs the true Dice where known; likely failures marked."""
    fig = go.Figure()
    known = ranking[ranking.dice.notna() & ranking.expected_dice.notna()]
    lo, hi = 0.0, 1.0
    if len(known):
        lo = float(min(known.dice.min(), known.expected_low.min())) - 0.02
        hi = min(1.0, float(max(known.dice.max(), known.expected_high.max())) + 0.02)
    for flagged, colour, name in ((False, "#4d4d4d", "expected Dice"), (True, "#d6604d", "likely failure")):
        part = known[known.likely_failure == flagged]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part.dice, y=part.expected_dice, mode="markers", name=name,
            marker=dict(color=colour, size=9, symbol="x" if flagged else "circle"),
            error_y=dict(type="data", symmetric=False, array=part.expected_high - part.expected_dice,
                         arrayminus=part.expected_dice - part.expected_low, color=colour, thickness=1),
            customdata=np.stack([part.case_id, part.dataset, part.expected_low.map(fmt),
                                 part.expected_high.map(fmt)], axis=1),
            hovertemplate="case <b>%{customdata[0]}</b> (%{customdata[1]})<br>true %{x:.3f} · expected %{y:.3f} "
                          "[%{customdata[2]}, %{customdata[3]}]<extra></extra>"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999", dash="dot"),
                             hoverinfo="skip", name="expected = true"))
    fig.update_xaxes(title_text=f"true {dice_label}", range=[lo, hi])
    fig.update_yaxes(title_text=f"expected {dice_label} (no labels used)", range=[lo, hi])
    return base_layout(fig, title, provenance, 460)


def perturbation_curves(summary: pd.DataFrame, labels: dict[str, str], title: str, provenance: str) -> go.Figure:
    """MoRF and LeRF curves: median over the cohort's (case, class) pairs with an IQR band."""
    orderings = [o for o in ("morf", "lerf") if o in set(summary.ordering)] + sorted(
        set(summary.ordering) - {"morf", "lerf"})
    fig = make_subplots(rows=1, cols=max(len(orderings), 1), shared_yaxes=True, horizontal_spacing=0.05)
    names = {"morf": "MoRF: most relevant removed first", "lerf": "LeRF: least relevant removed first"}
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#9d755d"]
    for c, ordering in enumerate(orderings, start=1):
        for k, (run_id, part) in enumerate(summary[summary.ordering == ordering].groupby("run_id", sort=True)):
            part = part.sort_values("step")
            colour = palette[k % len(palette)]
            fig.add_trace(go.Scatter(x=np.concatenate([part.fraction, part.fraction[::-1]]),
                                     y=np.concatenate([part.q75, part.q25[::-1]]), fill="toself",
                                     fillcolor=alpha(colour, 0.18), line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, legendgroup=run_id), row=1, col=c)
            fig.add_trace(go.Scatter(x=part.fraction, y=part["median"], mode="lines+markers",
                                     name=labels.get(run_id, run_id), line=dict(color=colour, width=2),
                                     legendgroup=run_id, showlegend=c == 1,
                                     customdata=np.column_stack([part.q25, part.q75, part.n]),
                                     hovertemplate=("fraction removed %{x:.2f}<br>median %{y:.3f}<br>IQR "
                                                    "%{customdata[0]:.3f} – %{customdata[1]:.3f}<br>n %{customdata[2]}"
                                                    "<extra>" + html.escape(labels.get(run_id, run_id)) + "</extra>")),
                          row=1, col=c)
        fig.update_xaxes(title_text=f"{names.get(ordering, ordering)} (fraction of input removed)", row=1, col=c)
    fig.update_yaxes(title_text="class score, normalised (1 clean, 0 all removed)", row=1, col=1)
    fig.update_layout(legend=LEGEND_TOP_RIGHT)
    return base_layout(fig, title, provenance, 440)
