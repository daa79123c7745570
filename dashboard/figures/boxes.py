"""Box plots drawn from statistics computed in the store (``data.*_distribution``: quartiles, whiskers,
mean) plus the cases outside the whiskers, so a box of 20,000 cases sends a handful of numbers to the
browser instead of every value."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.analysis.ordering import GROUP_ORDER
from dashboard.analytics import Roi
from dashboard.figures.base import LEGEND_TOP_RIGHT, LOG_FLOOR, alpha, base_layout, group_legend, signed_text

_BOX_STATS = ("q1", "median", "q3", "lowerfence", "upperfence", "mean")


def _stat_boxes(stats: pd.DataFrame, positions: Sequence, color: str, name: str, width: float,
                floor: float | None = None, **kwargs) -> go.Box:
    """One box per row of ``stats`` (columns of ``_BOX_STATS``) at ``positions``."""
    values = {k: stats[k].to_numpy(dtype=float, na_value=np.nan) for k in _BOX_STATS}
    if floor is not None:
        values = {k: np.clip(v, floor, None) for k, v in values.items()}
    return go.Box(x=list(positions), **{k: v.tolist() for k, v in values.items()}, name=name, width=width,
                  marker_color=color, line=dict(color=color, width=1.2), fillcolor=alpha(color, 0.25), **kwargs)


def _boxes_by_group(fig: go.Figure, stats: pd.DataFrame, rois: Sequence[Roi], floor: float | None = None) -> None:
    """One box per RoI (``stats`` indexed by roi_id) at its name, one trace (and legend entry) per group."""
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    for grp in sorted({r.grp for r in rois}, key=lambda g: rank.get(g, len(rank))):
        members = [r for r in rois if r.grp == grp]
        fig.add_trace(_stat_boxes(stats.loc[[r.roi_id for r in members]], [r.name for r in members],
                                  members[0].color, grp, 0.6, floor, legendgroup=grp))


def _outlier_points(positions: Sequence, y: np.ndarray, color, customdata: np.ndarray,
                    hovertemplate: str, **kwargs) -> go.Scatter:
    return go.Scatter(x=list(positions), y=y, mode="markers", marker=dict(color=color, size=5, opacity=0.8),
                      customdata=customdata, hovertemplate=hovertemplate, showlegend=False, **kwargs)


def _text(series: pd.Series, spec: str, missing: str) -> np.ndarray:
    return np.array([missing if pd.isna(v) else format(v, spec) for v in series], dtype=object)


def class_boxplot(boxes: pd.DataFrame, outliers: pd.DataFrame, sources: Sequence[Roi], target: Roi, title: str,
                  provenance: str, value_label: str, log_scale: bool = False) -> go.Figure:
    """Box plot of e_{b->a} over cases for every source b (one box per b, coloured by group).

    ``boxes``: one row per source_id with the statistics of ``_BOX_STATS``; ``outliers``:
    source_id, value, case_id, dataset, sex, age, dice of the points outside the whiskers.
    """
    fig = go.Figure()
    floor = LOG_FLOOR if log_scale else None
    stats = boxes.set_index("source_id")
    shown = [s for s in sources if s.roi_id in stats.index]
    _boxes_by_group(fig, stats, shown, floor)
    names = {s.roi_id: s.name for s in shown}
    points = outliers[outliers.source_id.isin(names)]
    if len(points):
        y = points["value"].to_numpy(dtype=float, na_value=np.nan)
        custom = np.column_stack([points.case_id.astype(str), _text(points.sex, "", "unknown"),
                                  _text(points.age, "g", "unknown"), _text(points.dice, ".3f", "n/a"),
                                  points.dataset.astype(str)])
        fig.add_trace(_outlier_points(
            points.source_id.map(names), np.clip(y, floor, None) if floor else y,
            points.source_id.map({s.roi_id: s.color for s in shown}).tolist(), custom,
            "case <b>%{customdata[0]}</b> (%{customdata[4]})<br>sex %{customdata[1]}, age %{customdata[2]}<br>"
            "Dice " + html.escape(target.name) + ": %{customdata[3]}<br>" + value_label +
            ": %{y:.4f}<extra>%{x}</extra>"))
    fig.update_xaxes(title_text="source RoI b", tickangle=-45, categoryorder="array",
                     categoryarray=[s.name for s in shown])
    fig.update_yaxes(title_text=f"e(b → {target.name}) · {value_label}", type="log" if log_scale else "linear")
    fig.update_layout(legend=dict(LEGEND_TOP_RIGHT, title="group"))
    return base_layout(fig, title, provenance, 560)


def context_mass_boxes(boxes: pd.DataFrame, outliers: pd.DataFrame, targets: Sequence[Roi], title: str,
                       provenance: str) -> go.Figure:
    """Context mass 1 − e(a→a) per class, one box per dataset side by side.

    ``boxes``: target_id, dataset and the statistics of ``_BOX_STATS``; ``outliers``:
    target_id, dataset, value, case_id.
    """
    fig = go.Figure()
    palette = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#e45756"]
    rank = {t.roi_id: i for i, t in enumerate(targets)}
    datasets = sorted(boxes.dataset.astype(str).unique())
    slot = 0.8 / max(len(datasets), 1)
    for k, dataset in enumerate(datasets):
        shift = (k - (len(datasets) - 1) / 2) * slot
        color = palette[k % len(palette)]
        part = boxes[(boxes.dataset.astype(str) == dataset) & boxes.target_id.isin(rank)]
        part = part.assign(rank=part.target_id.map(rank)).sort_values("rank")
        fig.add_trace(_stat_boxes(part, part["rank"] + shift, color, dataset, 0.85 * slot, legendgroup=dataset))
        points = outliers[(outliers.dataset.astype(str) == dataset) & outliers.target_id.isin(rank)]
        if len(points):
            fig.add_trace(_outlier_points(
                points.target_id.map(rank) + shift, points["value"].to_numpy(dtype=float), color,
                points[["case_id"]].astype(str).to_numpy(),
                "case %{customdata[0]}<br>context mass %{y:.3f}<extra>" + html.escape(dataset) + "</extra>",
                legendgroup=dataset))
    fig.update_layout(legend=dict(LEGEND_TOP_RIGHT, title="dataset"))
    # numeric positions: the boxes of the datasets sit side by side, their points on them
    fig.update_xaxes(title_text="target class a", tickangle=-45, tickmode="array", tickvals=list(range(len(targets))),
                     ticktext=[t.name for t in targets], range=[-0.6, len(targets) - 0.4], zeroline=False)
    fig.update_yaxes(title_text="context mass 1 − e(a → a)", range=[0, 1.02])
    return base_layout(fig, title, provenance, 520)


def dice_boxes(boxes: pd.DataFrame, outliers: pd.DataFrame, classes: Sequence[Roi], title: str,
               provenance: str) -> go.Figure:
    """Dice per class over the cohort's cases (``boxes``: class_id and the statistics of ``_BOX_STATS``;
    ``outliers``: class_id, value, case_id)."""
    fig = go.Figure()
    stats = boxes.set_index("class_id")
    shown = [r for r in classes if r.roi_id in stats.index]
    _boxes_by_group(fig, stats, shown)
    names = {r.roi_id: r.name for r in shown}
    points = outliers[outliers.class_id.isin(names)]
    if len(points):
        fig.add_trace(_outlier_points(
            points.class_id.map(names), points["value"].to_numpy(dtype=float),
            points.class_id.map({r.roi_id: r.color for r in shown}).tolist(),
            points[["case_id"]].astype(str).to_numpy(), "case %{customdata[0]}<br>Dice %{y:.3f}<extra>%{x}</extra>"))
    fig.update_xaxes(tickangle=-45, categoryorder="array", categoryarray=[r.name for r in shown])
    fig.update_yaxes(title_text="Dice", range=[0, 1.02])
    fig.update_layout(legend=dict(LEGEND_TOP_RIGHT, title="group"))
    return base_layout(fig, title, provenance, 440)


def signed_boxplot(values: pd.DataFrame, sources: Sequence[Roi], target: Roi, title: str, provenance: str,
                   value_label: str = "ATE") -> go.Figure:
    """Per source region, the distribution over cases of a signed effect on ``target`` (0 marked).

    ``values``: ``case_id, source_id, ate, se, n, dataset`` (one row per case and source).
    """
    fig = go.Figure()
    frame = values.copy()
    frame["se_text"] = frame["se"].map(lambda v: signed_text(v, signed=False))
    for source in sources:
        part = frame[frame.source_id == source.roi_id]
        fig.add_trace(go.Box(
            y=part["ate"].to_numpy(dtype=float, na_value=np.nan), x=[source.name] * len(part), name=source.name,
            boxpoints="all", jitter=0.3, pointpos=0, marker=dict(color=source.color, size=5),
            line=dict(color=source.color, width=1.2), fillcolor=alpha(source.color, 0.25),
            customdata=part[["case_id", "se_text", "n", "dataset"]].to_numpy(),
            hovertemplate=("case <b>%{customdata[0]}</b> (%{customdata[3]})<br>" + html.escape(value_label)
                           + ": %{y:.4g} ± %{customdata[1]} (SE, %{customdata[2]} donors)<extra>"
                           + html.escape(source.name) + "</extra>"),
            showlegend=False))
    fig.add_hline(y=0.0, line=dict(color="#444", width=1, dash="dot"))
    group_legend(fig, [s.grp for s in sources])
    fig.update_xaxes(title_text="source region b", tickangle=-45)
    fig.update_yaxes(title_text=f"{value_label} of b on {target.name} (+ supports, − opposes)", zeroline=True)
    fig.update_layout(legend=dict(LEGEND_TOP_RIGHT, title="group"))
    return base_layout(fig, title, provenance, 560)
