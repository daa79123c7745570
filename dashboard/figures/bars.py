"""Bar charts: case counts, drift per class, cell shifts, case scores, outlier reasons, method agreement."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from plotly.subplots import make_subplots

from dashboard.analytics import Roi, roi_name
from dashboard.figures.base import LEGEND_TOP_RIGHT, base_layout, fmt


def counts_bars(counts: dict[str, pd.DataFrame], title: str, provenance: str) -> go.Figure:
    """Case counts by dataset, split, sex and age band as four small bar charts."""
    names = list(counts)
    fig = make_subplots(rows=1, cols=len(names), horizontal_spacing=0.06)
    for k, name in enumerate(names, start=1):
        table = counts[name]
        fig.add_trace(go.Bar(x=table[name].astype(str), y=table["cases"], marker_color="#4c78a8",
                             text=table["cases"], textposition="outside", cliponaxis=False,
                             hovertemplate=f"{name} %{{x}}: %{{y}} cases<extra></extra>", showlegend=False),
                      row=1, col=k)
        fig.update_xaxes(title_text=name, row=1, col=k)
    fig.update_yaxes(title_text="cases", row=1, col=1)
    fig.update_yaxes(rangemode="tozero")
    return base_layout(fig, title, provenance, 360)


def drift_bars(tests: pd.DataFrame, targets: Sequence[Roi], title: str, provenance: str,
               alpha: float = 0.05) -> go.Figure:
    """Energy distance per class (one dataset vs the reference); bars at q < alpha dark, with the q-value."""
    by_id = {r.roi_id: r for r in targets}
    rows = tests[tests.target_id.isin(by_id)].copy()
    rows["order"] = rows.target_id.map({r.roi_id: i for i, r in enumerate(targets)})
    rows = rows.sort_values("order")
    names = [by_id[t].name for t in rows.target_id]
    drifted = rows.q_value < alpha
    fig = go.Figure(go.Bar(
        x=names, y=rows.statistic, marker=dict(color=np.where(drifted, "#b2182b", "#bdbdbd"),
                                               line=dict(color=[by_id[t].color for t in rows.target_id], width=2)),
        text=[f"q={fmt(q, 2)}" for q in rows.q_value], textposition="outside",
        customdata=np.stack([rows.p_value.map(fmt), rows.q_value.map(fmt), rows.n_ref, rows.n_new], axis=1),
        hovertemplate="<b>%{x}</b><br>energy distance %{y:.4f}<br>p %{customdata[0]} · q (BH) %{customdata[1]}"
                      "<br>n reference %{customdata[2]}, n cohort %{customdata[3]}<extra></extra>",
        showlegend=False))
    fig.update_xaxes(title_text="target class a", tickangle=-45, categoryorder="array", categoryarray=names)
    fig.update_yaxes(title_text="energy distance of the class rows (centred log-ratios)", rangemode="tozero")
    fig.add_annotation(text=f"dark: q < {alpha:g} (drift)", xref="paper", yref="paper", x=1, y=1.05,
                       showarrow=False, font=dict(size=10, color="#b2182b"))
    return base_layout(fig, title, provenance, 460)


def effect_bars(cells: pd.DataFrame, rois: dict[int, Roi], title: str, provenance: str) -> go.Figure:
    """The cells that moved: Hedges' g (cohort - reference) per cell, largest first."""
    labels = [f"{rois[int(s)].name} → {rois[int(t)].name}" for t, s in zip(cells.target_id, cells.source_id)]
    fig = signed_cell_bars(labels, cells.effect_size, cells.mean_ref, cells.mean_new, cells.q_value,
                           ("Hedges' g %{x:.2f}", "reference mean", "cohort mean"), "Hedges' g (cohort − reference)")
    return base_layout(fig, title, provenance, max(360, 80 + 24 * len(cells)))


def signed_cell_bars(labels: Sequence[str], values: pd.Series, means_a: pd.Series, means_b: pd.Series,
                     q_values: pd.Series, hover: tuple[str, str, str], axis_title: str) -> go.Figure:
    """Horizontal bars of a signed value per cell (red up, blue down), its two means and q in the hover.

    ``hover``: the value's line (a Plotly format of ``%{x}``) and the names of the two means."""
    value_line, name_a, name_b = hover
    fig = go.Figure(go.Bar(
        y=labels, x=values, orientation="h", marker=dict(color=np.where(values > 0, "#b2182b", "#2166ac")),
        customdata=np.stack([means_a.map(fmt), means_b.map(fmt), q_values.map(fmt)], axis=1),
        hovertemplate=f"<b>%{{y}}</b><br>{value_line}<br>{name_a} %{{customdata[0]}} · {name_b} "
                      "%{customdata[1]}<br>q (BH, permutations) %{customdata[2]}<extra></extra>", showlegend=False))
    fig.update_yaxes(autorange="reversed", title_text="cell e(b → a)")
    fig.update_xaxes(title_text=axis_title, zeroline=True)
    return fig


def score_bars(frame: pd.DataFrame, value: str, title: str, provenance: str, value_label: str) -> go.Figure:
    """One bar per case (largest first), coloured by dataset; hover names the case's metadata."""
    fig = go.Figure()
    for dataset, group in frame.groupby("dataset", sort=True):
        fig.add_trace(go.Bar(x=group.case_id, y=group[value], name=str(dataset),
                             customdata=np.stack([group.sex.fillna("?"), group.age.map(fmt),
                                                  group.pathologies.fillna("")], axis=1),
                             hovertemplate="<b>%{x}</b><br>" + html.escape(value_label) + " %{y:.4f}<br>sex "
                                           "%{customdata[0]}, age %{customdata[1]}<br>%{customdata[2]}<extra></extra>"))
    fig.update_xaxes(categoryorder="array", categoryarray=frame.case_id.tolist(), tickangle=-45, title_text="case")
    fig.update_yaxes(title_text=value_label)
    fig.update_layout(legend=dict(LEGEND_TOP_RIGHT, title="dataset"))
    return base_layout(fig, title, provenance, 420)


def reason_bars(reasons: pd.DataFrame, title: str, provenance: str) -> go.Figure:
    """A case's top outlier cells: contribution to its anomaly (path-length units), largest first."""
    labels = [f"{s} → {t}" for s, t in zip(reasons.source, reasons.target)]
    fig = go.Figure(go.Bar(y=labels, x=reasons.contribution, orientation="h",
                           marker=dict(color=np.where(reasons.contribution > 0, "#b2182b", "#2166ac")),
                           hovertemplate="<b>%{y}</b><br>contribution %{x:.3f} (tree depths)<extra></extra>",
                           showlegend=False))
    fig.update_yaxes(autorange="reversed", title_text="cell e(b → a)")
    fig.update_xaxes(title_text="contribution to the anomaly (shorter isolation path, tree depths)")
    return base_layout(fig, title, provenance, max(320, 80 + 28 * len(reasons)))


def agreement_bars(agreement: pd.DataFrame, rois: dict[int, Roi], other_label: str, title: str,
                   provenance: str) -> go.Figure:
    """Mean Spearman rho of the two methods' class rows per class, with its bootstrap interval."""
    names = [roi_name(rois, t) for t in agreement.target_id]
    fig = go.Figure(go.Bar(
        x=names, y=agreement.spearman_mean, marker=dict(color="#4393c3"),
        error_y=dict(type="data", symmetric=False, array=agreement.spearman_high - agreement.spearman_mean,
                     arrayminus=agreement.spearman_mean - agreement.spearman_low, color="#333"),
        customdata=np.stack([agreement.spearman_median.map(fmt), agreement.n_cases], axis=1),
        hovertemplate="<b>%{x}</b><br>mean rho %{y:.3f} (median %{customdata[0]})<br>%{customdata[1]} cases"
                      "<extra></extra>", name=f"vs {other_label}"))
    fig.update_xaxes(tickangle=-45, title_text="target class a")
    fig.update_yaxes(title_text="Spearman ρ, mean over cases", range=[-1.05, 1.05])
    return base_layout(fig, title, provenance, 440)
