"""Plotly figure builders (pure: data in, ``go.Figure`` out; no Streamlit).

Every builder takes a ``provenance`` line that becomes the figure's subtitle, so an
exported PNG/SVG/PDF still says which run, method, cohort filter and n it shows.
RoIs are coloured by anatomical group (cardiovascular red, muscle yellow, bone blue,
organ grey, pathology black) as in the paper.
"""
from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from agg2exp_core.labels import GROUP_COLORS
from agg2exp_core.analysis.ordering import GROUP_ORDER, ClusterOrder
from dashboard.analytics import Roi, roi_name

FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=12)
# Every figure of the dashboard is drawn on plotly_white: as the default template it is applied when a
# figure is created (≈ 1 ms) instead of by update_layout (≈ 10 ms a figure, 5-8 figures a page).
pio.templates.default = "plotly_white"
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
LOG_FLOOR = 1e-4


def _base_layout(fig: go.Figure, title: str, provenance: str, height: int | None = None) -> go.Figure:
    fig.update_layout(
        title=dict(text=html.escape(title), x=0.0, xanchor="left",
                   subtitle=dict(text=html.escape(provenance), font=dict(size=10, color="#666"))),
        font=FONT, margin=dict(l=10, r=10, t=70, b=10))
    if height:
        fig.update_layout(height=height)
    return fig


def _tick(roi: Roi) -> str:
    return f"<span style='color:{roi.color}'>{html.escape(roi.name)}</span>"


def _group_legend(fig: go.Figure, groups: Sequence[str], row=None, col=None) -> None:
    """Invisible marker traces that put the anatomical-group colours into the legend."""
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    for grp in sorted(dict.fromkeys(groups), key=lambda g: rank.get(g, len(rank))):
        trace = go.Scatter(x=[None], y=[None], mode="markers", name=grp, showlegend=True,
                           marker=dict(size=10, color=GROUP_COLORS.get(grp, "#999"), symbol="square"))
        fig.add_trace(trace, row=row, col=col) if row else fig.add_trace(trace)


# --- matrices --------------------------------------------------------------------------------

def matrix_heatmap(matrix: np.ndarray, targets: Sequence[Roi], sources: Sequence[Roi], title: str,
                   provenance: str, value_label: str = "mass", log_scale: bool = False,
                   counts: np.ndarray | None = None, row_tree: ClusterOrder | None = None,
                   column_tree: ClusterOrder | None = None, height: int | None = None) -> go.Figure:
    """Target (rows) x source (columns) matrix, already ordered; optional dendrograms of the order."""
    values = np.asarray(matrix, dtype=float)
    z = np.log10(np.clip(values, LOG_FLOOR, None)) if log_scale else values
    n_rows, n_cols = values.shape
    custom = np.empty((n_rows, n_cols, 3), dtype=object)
    for i, t in enumerate(targets):
        for j, s in enumerate(sources):
            custom[i, j] = (t.name, s.name, "" if counts is None else int(counts[i, j]))
    hover = (f"target <b>%{{customdata[0]}}</b><br>source <b>%{{customdata[1]}}</b><br>"
             f"{value_label}: %{{text}}" + ("<br>n cases: %{customdata[2]}" if counts is not None else "")
             + "<extra></extra>")
    text = np.vectorize(lambda v: "n/a" if not np.isfinite(v) else f"{v:.4f}")(values) if values.size else values
    colorbar = dict(title=dict(text=value_label + (" (log)" if log_scale else ""), side="right"), thickness=12)
    if log_scale:
        ticks = list(range(int(math.log10(LOG_FLOOR)), 1))
        colorbar.update(tickvals=ticks, ticktext=[f"{10.0 ** k:g}" for k in ticks])
    heat = go.Heatmap(z=z, x=list(range(n_cols)), y=list(range(n_rows)), customdata=custom, text=text,
                      hovertemplate=hover, colorscale=SEQUENTIAL, colorbar=colorbar,
                      zmin=math.log10(LOG_FLOOR) if log_scale else 0.0, xgap=1, ygap=1,
                      zmax=0.0 if log_scale else None)
    with_trees = row_tree is not None and column_tree is not None and bool(row_tree.icoord)
    if with_trees:
        # Dendrograms left (rows) and on top (columns); row labels move to the right of the
        # cells and the colour bar into the free top-left corner.
        fig = make_subplots(rows=2, cols=2, column_widths=[0.14, 0.86], row_heights=[0.14, 0.86],
                            shared_xaxes=True, horizontal_spacing=0.004, vertical_spacing=0.004)
        heat.update(colorbar=dict(colorbar, orientation="h", x=0.0, xanchor="left", y=1.0, yanchor="top",
                                  len=0.13, thickness=10, title=dict(text=value_label, side="top")))
        fig.add_trace(heat, row=2, col=2)
        _add_dendrogram(fig, column_tree, row=1, col=2, horizontal=False)
        _add_dendrogram(fig, row_tree, row=2, col=1, horizontal=True)
        for row, col in ((1, 2), (2, 1)):
            fig.update_xaxes(visible=False, row=row, col=col)
            fig.update_yaxes(visible=False, row=row, col=col)
        fig.update_yaxes(range=[n_rows - 0.5, -0.5], row=2, col=1)
        heat_axes = dict(row=2, col=2)
        label_side = "right"
    else:
        fig = go.Figure(heat)
        heat_axes = {}
        label_side = "left"
    fig.update_xaxes(tickvals=list(range(n_cols)), ticktext=[_tick(s) for s in sources], tickangle=-45,
                     title_text="source RoI b", side="bottom", range=[-0.5, n_cols - 0.5], **heat_axes)
    fig.update_yaxes(tickvals=list(range(n_rows)), ticktext=[_tick(t) for t in targets], side=label_side,
                     title_text="target class a", range=[n_rows - 0.5, -0.5], **heat_axes)
    fig.update_layout(showlegend=False, plot_bgcolor="white")
    return _base_layout(fig, title, provenance, height or max(420, 60 + 28 * n_rows + 140))


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


def difference_heatmap(difference: np.ndarray, p_values: np.ndarray, q_values: np.ndarray,
                       significant: np.ndarray, mean_a: np.ndarray, mean_b: np.ndarray,
                       targets: Sequence[Roi], sources: Sequence[Roi], label_a: str, label_b: str,
                       title: str, provenance: str, adjusted: bool) -> go.Figure:
    """Mean(A) - mean(B) on a symmetric diverging scale; significant cells marked with a black dot."""
    n_rows, n_cols = difference.shape
    finite = np.abs(difference[np.isfinite(difference)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    custom = np.empty((n_rows, n_cols, 6), dtype=object)
    for i, t in enumerate(targets):
        for j, s in enumerate(sources):
            custom[i, j] = (t.name, s.name, _fmt(mean_a[i, j]), _fmt(mean_b[i, j]), _fmt(p_values[i, j], 3),
                            _fmt(q_values[i, j], 3))
    q_label = "q (BH)" if adjusted else "p"
    hover = ("target <b>%{customdata[0]}</b><br>source <b>%{customdata[1]}</b><br>"
             f"difference: %{{z:.4f}}<br>{html.escape(label_a)}: %{{customdata[2]}}<br>"
             f"{html.escape(label_b)}: %{{customdata[3]}}<br>p: %{{customdata[4]}}"
             + (f"<br>{q_label}: %{{customdata[5]}}" if adjusted else "") + "<extra></extra>")
    fig = go.Figure(go.Heatmap(z=difference, x=list(range(n_cols)), y=list(range(n_rows)), customdata=custom,
                               hovertemplate=hover, colorscale=DIVERGING, zmid=0, zmin=-bound, zmax=bound,
                               xgap=1, ygap=1,
                               colorbar=dict(title=dict(text=f"mean({label_a}) − mean({label_b})", side="right"),
                                             thickness=12)))
    rows, cols = np.nonzero(significant)
    fig.add_trace(go.Scatter(x=cols.tolist(), y=rows.tolist(), mode="markers", hoverinfo="skip",
                             name=f"{q_label} < alpha", marker=dict(symbol="circle", size=9, color="black",
                                                                     line=dict(color="white", width=1))))
    fig.update_xaxes(tickvals=list(range(n_cols)), ticktext=[_tick(s) for s in sources], tickangle=-45,
                     title_text="source RoI b", range=[-0.5, n_cols - 0.5])
    fig.update_yaxes(tickvals=list(range(n_rows)), ticktext=[_tick(t) for t in targets],
                     title_text="target class a", range=[n_rows - 0.5, -0.5])
    fig.update_layout(showlegend=True, legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"),
                      plot_bgcolor="white")
    return _base_layout(fig, title, provenance, max(420, 60 + 28 * n_rows + 140))


def _finite(value) -> float | None:
    """``value`` as a finite float; None when it is missing, NaN or not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _fmt(value, digits: int = 4) -> str:
    value = _finite(value)
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if digits < 4 else f"{value:.4f}"


# --- knowledge graph ---------------------------------------------------------------------------

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
                           arrowcolor=_alpha(source.color, 0.55), standoff=12, startstandoff=8))
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
    _group_legend(fig, [n.grp for n in nodes])
    fig.update_xaxes(visible=False, range=[-1.6, 1.6])
    fig.update_yaxes(visible=False, range=[-1.3, 1.3], scaleanchor="x")
    fig.update_layout(legend=dict(title="group", orientation="v"), plot_bgcolor="white")
    return _base_layout(fig, title, provenance, 720)


def _text_position(x: float, y: float) -> str:
    vertical = "top" if y > 0.2 else ("bottom" if y < -0.2 else "middle")
    horizontal = "right" if x > 0.2 else ("left" if x < -0.2 else "center")
    return f"{vertical} {horizontal}" if vertical != "middle" or horizontal != "center" else "top center"


def _alpha(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    if len(color) != 6:
        return f"rgba(120,120,120,{alpha})"
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# --- distributions --------------------------------------------------------------------------------
# Boxes are drawn from statistics computed in the store (``data.*_distribution``: quartiles,
# whiskers, mean) plus the cases outside the whiskers, so a box of 20,000 cases sends a
# handful of numbers to the browser instead of every value.

_BOX_STATS = ("q1", "median", "q3", "lowerfence", "upperfence", "mean")


def _stat_boxes(stats: pd.DataFrame, positions: Sequence, color: str, name: str, width: float,
                floor: float | None = None, **kwargs) -> go.Box:
    """One box per row of ``stats`` (columns of ``_BOX_STATS``) at ``positions``."""
    values = {k: stats[k].to_numpy(dtype=float, na_value=np.nan) for k in _BOX_STATS}
    if floor is not None:
        values = {k: np.clip(v, floor, None) for k, v in values.items()}
    return go.Box(x=list(positions), **{k: v.tolist() for k, v in values.items()}, name=name, width=width,
                  marker_color=color, line=dict(color=color, width=1.2), fillcolor=_alpha(color, 0.25), **kwargs)


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


def _text(series: pd.Series, fmt: str, missing: str) -> np.ndarray:
    return np.array([missing if pd.isna(v) else format(v, fmt) for v in series], dtype=object)


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
    fig.update_layout(legend=dict(title="group", orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return _base_layout(fig, title, provenance, 560)


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
    fig.update_layout(legend=dict(title="dataset", orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    # numeric positions: the boxes of the datasets sit side by side, their points on them
    fig.update_xaxes(title_text="target class a", tickangle=-45, tickmode="array", tickvals=list(range(len(targets))),
                     ticktext=[t.name for t in targets], range=[-0.6, len(targets) - 0.4], zeroline=False)
    fig.update_yaxes(title_text="context mass 1 − e(a → a)", range=[0, 1.02])
    return _base_layout(fig, title, provenance, 520)


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
    return _base_layout(fig, title, provenance, 480)


# --- overview ------------------------------------------------------------------------------------

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
    return _base_layout(fig, title, provenance, 360)


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
    fig.update_layout(legend=dict(title="group", orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return _base_layout(fig, title, provenance, 440)


# --- case viewer ----------------------------------------------------------------------------------

CROSSHAIR_COLOR = "#ffd400"


def png_source(rgb: np.ndarray) -> tuple[str, tuple[int, int]]:
    """(PNG data URI, (rows, cols)) of an RGB image (plotly.express's encoder: a few hundred kB instead of
    a JSON array of numbers)."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    return px.imshow(rgb, binary_string=True, binary_format="png").data[0].source, rgb.shape[:2]


def _scale_bar_mm(width_mm: float) -> float:
    """A round length of about a fifth of the image width (10, 20, 50, 100 … mm)."""
    target = width_mm / 5
    return max((b for b in (5, 10, 20, 50, 100, 200) if b <= max(target, 5)), default=5)


def slice_image(rgb: np.ndarray | str, pixel_mm: tuple[float, float], title: str, provenance: str,
                axis_labels: tuple[str, str], hover: dict | None = None,
                crosshair_mm: tuple[float, float] | None = None, colorbar: dict | None = None,
                height: int | None = None) -> go.Figure:
    """A composited RGB slice (rows top-down; or ``(data URI, (rows, cols))`` of its PNG, see ``png_source``)
    at its physical size: pixels of ``pixel_mm`` (dy, dx) mm,
    axes in mm from the top-left corner. ``hover``: invisible points (``x``, ``y`` in mm, ``customdata``
    rows (x, y, z, HU, attribution)) that show values and can be clicked; ``crosshair_mm`` (row, col)
    draws the other planes' positions; ``colorbar``: ``colorscale``, ``top``, ``title``."""
    dy, dx = pixel_mm
    source, (n_rows, n_cols) = rgb if isinstance(rgb, tuple) else png_source(rgb)
    height_mm, width_mm = n_rows * dy, n_cols * dx
    fig = go.Figure(go.Image(source=source, x0=dx / 2, y0=dy / 2, dx=dx, dy=dy, hoverinfo="skip"))
    if hover is not None:
        fig.add_trace(go.Scattergl(
            x=hover["x"], y=hover["y"], customdata=hover["customdata"], mode="markers", showlegend=False,
            marker=dict(size=hover.get("size", 6), opacity=0, color="white"),
            selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
            hovertemplate=("voxel (%{customdata[0]}, %{customdata[1]}, %{customdata[2]})<br>HU %{customdata[3]}"
                           + ("<br>attribution %{customdata[4]:.4g}" if hover.get("with_attr") else "")
                           + "<extra></extra>")))
    if crosshair_mm is not None:
        row_mm, col_mm = crosshair_mm
        line = dict(color=CROSSHAIR_COLOR, width=1, dash="dot")
        fig.add_shape(type="line", x0=col_mm, x1=col_mm, y0=0, y1=height_mm, line=line, opacity=0.8)
        fig.add_shape(type="line", x0=0, x1=width_mm, y0=row_mm, y1=row_mm, line=line, opacity=0.8)
    bar = _scale_bar_mm(width_mm)
    for colour, width in (("black", 5), ("white", 3)):      # legible on dark and bright tissue
        fig.add_shape(type="line", x0=width_mm * 0.96 - bar, x1=width_mm * 0.96, y0=height_mm * 0.96,
                      y1=height_mm * 0.96, line=dict(color=colour, width=width))
    fig.add_annotation(text=f"{bar:g} mm", x=width_mm * 0.96 - bar / 2, y=height_mm * 0.95, showarrow=False,
                       yanchor="bottom", font=dict(color="white", size=10), bgcolor="rgba(0,0,0,0.45)")
    if colorbar is not None:
        _attribution_colorbar(fig, colorbar)
    fig.update_xaxes(visible=False, range=[0, width_mm], constrain="domain")
    fig.update_yaxes(visible=False, range=[height_mm, 0], scaleanchor="x", scaleratio=1, constrain="domain")
    for text, x, anchor in ((axis_labels[0], 0.01, "left"), (axis_labels[1], 0.99, "right")):
        fig.add_annotation(text=f"<b>{html.escape(text)}</b>", x=x, y=0.99, xref="x domain", yref="y domain",
                           showarrow=False, font=dict(color="white", size=13), xanchor=anchor, yanchor="top")
    aspect = height_mm / max(width_mm, 1e-9)
    fig = _base_layout(fig, title, provenance, height or slice_height(aspect, colorbar is not None))
    fig.update_layout(margin=dict(l=0, r=0, t=60, b=95 if colorbar else 10), plot_bgcolor="white",
                      hovermode="closest", dragmode="pan", clickmode="event+select")
    return fig


def slice_height(aspect: float, with_colorbar: bool = True, width_px: int = 430) -> int:
    """Figure height for a slice of height/width ``aspect`` shown about ``width_px`` wide."""
    return int(70 + (95 if with_colorbar else 10) + width_px * min(max(aspect, 0.3), 1.6))


def _attribution_colorbar(fig: go.Figure, colorbar: dict) -> None:
    """A horizontal colour bar under the image from -top to +top; the grey middle band is the hidden
    |value| < threshold (its value is in the title)."""
    top = float(colorbar["top"])
    ticks = [-top, -top / 2, 0.0, top / 2, top]
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker=dict(color=[0.0], cmin=-top, cmax=top, colorscale=colorbar["colorscale"], showscale=True,
                    colorbar=dict(orientation="h", x=0.5, xanchor="center", y=-0.02, yanchor="top", len=0.92,
                                  thickness=10, tickvals=ticks, ticktext=[_tick_text(t) for t in ticks],
                                  tickfont=dict(size=10), tickangle=0,
                                  title=dict(text=html.escape(colorbar["title"]), side="bottom",
                                             font=dict(size=10))))))


def _tick_text(value: float) -> str:
    """'26,180' for large values (KernelSHAP logit sums), '0.00123' / '1.23e-05' for small ones."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def surface_mesh(surfaces: Sequence[tuple[Roi, np.ndarray, np.ndarray]], title: str, provenance: str,
                 values: Sequence[np.ndarray | None] | None = None, top: float | None = None,
                 value_title: str = "attribution", highlight: str | None = None) -> go.Figure:
    """3-D surfaces of predicted structures (vertices [n,3] in mm, triangles [m,3]). With ``values``
    (one array per surface, one value per vertex), the surfaces are coloured by them on a symmetric
    diverging scale [-top, top] (red positive, blue negative); ``highlight`` names the structure drawn
    opaque while the others are translucent."""
    fig = go.Figure()
    coloured = values is not None and top is not None and top > 0
    shown_scale = False
    for k, (roi, vertices, faces) in enumerate(surfaces):
        opacity = 0.55 if roi.grp == "organ" else 0.9
        if highlight is not None:       # the explained class in front, its context see-through
            opacity = 1.0 if roi.name == highlight else (0.18 if roi.grp == "organ" else 0.4)
        trace = dict(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], i=faces[:, 0], j=faces[:, 1],
                     k=faces[:, 2], opacity=opacity, name=roi.name, showlegend=True, flatshading=False,
                     lighting=dict(ambient=0.5, diffuse=0.7, specular=0.2))
        vertex_values = values[k] if coloured else None
        if vertex_values is not None:
            trace.update(intensity=np.asarray(vertex_values, dtype=float), intensitymode="vertex",
                         colorscale=SURFACE_DIVERGING, cmin=-top, cmax=top, showscale=not shown_scale,
                         colorbar=dict(title=dict(text=html.escape(value_title), side="right"), thickness=12,
                                       len=0.7),
                         hovertemplate=html.escape(roi.name) + "<br>attribution %{intensity:.4g}<extra></extra>")
            shown_scale = True
        else:
            trace.update(color=roi.color, hovertemplate=html.escape(roi.name) + "<extra></extra>")
        fig.add_trace(go.Mesh3d(**trace))
    fig.update_layout(scene=dict(aspectmode="data", xaxis_title="x (R) mm", yaxis_title="y (A) mm",
                                 zaxis_title="z (S) mm", camera=dict(eye=dict(x=0.0, y=1.8, z=0.45)),
                                 domain=dict(x=[0.12, 1.0])),
                      legend=dict(itemsizing="constant", x=0, xanchor="left"))
    return _base_layout(fig, title, provenance, 680)


# Diverging scale of the surfaces: blue (negative) - light grey (0) - red (positive), as on the slices.
SURFACE_DIVERGING = [[0.0, "rgb(43,131,186)"], [0.5, "rgb(225,225,225)"], [1.0, "rgb(215,25,28)"]]


# --- methods --------------------------------------------------------------------------------------

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
                                     fillcolor=_alpha(colour, 0.18), line=dict(width=0), hoverinfo="skip",
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
    fig.update_layout(legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return _base_layout(fig, title, provenance, 440)


# --- causal effects (signed) ------------------------------------------------------------------------

def signed_bound(values) -> float:
    """Half-width of a zero-centred colour scale: the largest |value| (1 when there is none)."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def signed_text(value, signed: bool = True) -> str:
    """A signed effect as text: '+12.3', '−0.0451' (4 significant digits); 'n/a' when missing."""
    value = _finite(value)
    if value is None:
        return "n/a"
    return (f"{value:+.4g}" if signed else f"{value:.4g}").replace("-", "−")


def _label(item) -> str:
    return _tick(item) if isinstance(item, Roi) else html.escape(str(item))


def _name(item) -> str:
    return item.name if isinstance(item, Roi) else str(item)


def signed_heatmap(matrix: np.ndarray, se: np.ndarray, counts: np.ndarray, targets: Sequence, sources: Sequence,
                   title: str, provenance: str, value_label: str = "ATE", se_label: str = "SE",
                   count_label: str = "n", column_title: str = "source region b",
                   height: int | None = None) -> go.Figure:
    """Signed target x source matrix on a diverging scale centred at 0; value ± SE and n on hover.

    ``targets``/``sources``: RoIs (coloured ticks) or plain names (e.g. network components).
    """
    values = np.asarray(matrix, dtype=float)
    n_rows, n_cols = values.shape
    custom = np.empty((n_rows, n_cols, 5), dtype=object)
    for i, t in enumerate(targets):
        for j, s in enumerate(sources):
            custom[i, j] = (_name(t), _name(s), signed_text(values[i, j]), signed_text(se[i, j], signed=False),
                            "" if counts is None else int(counts[i, j]))
    hover = ("target <b>%{customdata[0]}</b><br>source <b>%{customdata[1]}</b><br>"
             f"{html.escape(value_label)}: %{{customdata[2]}}<br>{html.escape(se_label)}: %{{customdata[3]}}"
             + (f"<br>{html.escape(count_label)}: %{{customdata[4]}}" if counts is not None else "") + "<extra></extra>")
    bound = signed_bound(values)
    fig = go.Figure(go.Heatmap(z=values, x=list(range(n_cols)), y=list(range(n_rows)), customdata=custom,
                               hovertemplate=hover, colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound,
                               xgap=1, ygap=1,
                               colorbar=dict(title=dict(text=f"{value_label} (+ supports, − opposes)", side="right"),
                                             thickness=12)))
    fig.update_xaxes(tickvals=list(range(n_cols)), ticktext=[_label(s) for s in sources], tickangle=-45,
                     title_text=column_title, range=[-0.5, n_cols - 0.5])
    fig.update_yaxes(tickvals=list(range(n_rows)), ticktext=[_label(t) for t in targets],
                     title_text="target class a", range=[n_rows - 0.5, -0.5])
    fig.update_layout(showlegend=False, plot_bgcolor="white")
    return _base_layout(fig, title, provenance, height or max(420, 60 + 28 * n_rows + 140))


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
            line=dict(color=source.color, width=1.2), fillcolor=_alpha(source.color, 0.25),
            customdata=part[["case_id", "se_text", "n", "dataset"]].to_numpy(),
            hovertemplate=("case <b>%{customdata[0]}</b> (%{customdata[3]})<br>" + html.escape(value_label)
                           + ": %{y:.4g} ± %{customdata[1]} (SE, %{customdata[2]} donors)<extra>"
                           + html.escape(source.name) + "</extra>"),
            showlegend=False))
    fig.add_hline(y=0.0, line=dict(color="#444", width=1, dash="dot"))
    _group_legend(fig, [s.grp for s in sources])
    fig.update_xaxes(title_text="source region b", tickangle=-45)
    fig.update_yaxes(title_text=f"{value_label} of b on {target.name} (+ supports, − opposes)", zeroline=True)
    fig.update_layout(legend=dict(title="group", orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return _base_layout(fig, title, provenance, 560)


# --- analyses beyond the paper: intervals, drift, expected Dice, outlier reasons, method agreement -----------

def add_intervals(fig: go.Figure, low: np.ndarray, high: np.ndarray, label: str = "95 % CI") -> go.Figure:
    """Put each cell's interval into the hover of the figure's heat map (cells in the heat map's order)."""
    heat = next(t for t in fig.data if isinstance(t, go.Heatmap))
    custom = np.asarray(heat.customdata, dtype=object)
    bounds = np.empty(custom.shape[:2] + (1,), dtype=object)
    for i in range(custom.shape[0]):
        for j in range(custom.shape[1]):
            bounds[i, j, 0] = f"[{_fmt(low[i, j])}, {_fmt(high[i, j])}]"
    heat.customdata = np.concatenate([custom, bounds], axis=2)
    k = custom.shape[2]
    heat.hovertemplate = heat.hovertemplate.replace(
        "<extra></extra>", f"<br>{html.escape(label)}: %{{customdata[{k}]}}<extra></extra>")
    return fig


def add_sampling_noise(fig: go.Figure, se: np.ndarray, n_samples: int) -> go.Figure:
    """Each cell's SmoothGrad sampling noise in the heat map's hover: "± SE (n noise samples)"."""
    heat = next(t for t in fig.data if isinstance(t, go.Heatmap))
    custom = np.asarray(heat.customdata, dtype=object)
    noise = np.empty(custom.shape[:2] + (1,), dtype=object)
    for i in range(custom.shape[0]):
        for j in range(custom.shape[1]):
            noise[i, j, 0] = "n/a" if not np.isfinite(se[i, j]) else f"± {se[i, j]:.4f} ({n_samples} noise samples)"
    heat.customdata = np.concatenate([custom, noise], axis=2)
    heat.hovertemplate = heat.hovertemplate.replace(
        "<extra></extra>", f"<br>sampling noise (SE): %{{customdata[{custom.shape[2]}]}}<extra></extra>")
    return fig


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
        text=[f"q={_fmt(q, 2)}" for q in rows.q_value], textposition="outside",
        customdata=np.stack([rows.p_value.map(_fmt), rows.q_value.map(_fmt), rows.n_ref, rows.n_new], axis=1),
        hovertemplate="<b>%{x}</b><br>energy distance %{y:.4f}<br>p %{customdata[0]} · q (BH) %{customdata[1]}"
                      "<br>n reference %{customdata[2]}, n cohort %{customdata[3]}<extra></extra>",
        showlegend=False))
    fig.update_xaxes(title_text="target class a", tickangle=-45, categoryorder="array", categoryarray=names)
    fig.update_yaxes(title_text="energy distance of the class rows (centred log-ratios)", rangemode="tozero")
    fig.add_annotation(text=f"dark: q < {alpha:g} (drift)", xref="paper", yref="paper", x=1, y=1.05,
                       showarrow=False, font=dict(size=10, color="#b2182b"))
    return _base_layout(fig, title, provenance, 460)


def effect_bars(cells: pd.DataFrame, rois: dict[int, Roi], title: str, provenance: str) -> go.Figure:
    """The cells that moved: Hedges' g (cohort - reference) per cell, largest first."""
    labels = [f"{rois[int(s)].name} → {rois[int(t)].name}" for t, s in zip(cells.target_id, cells.source_id)]
    fig = go.Figure(go.Bar(
        y=labels, x=cells.effect_size, orientation="h",
        marker=dict(color=np.where(cells.effect_size > 0, "#b2182b", "#2166ac")),
        customdata=np.stack([cells.mean_ref.map(_fmt), cells.mean_new.map(_fmt), cells.q_value.map(_fmt)], axis=1),
        hovertemplate="<b>%{y}</b><br>Hedges' g %{x:.2f}<br>reference mean %{customdata[0]} · cohort mean "
                      "%{customdata[1]}<br>q (BH, permutations) %{customdata[2]}<extra></extra>", showlegend=False))
    fig.update_yaxes(autorange="reversed", title_text="cell e(b → a)")
    fig.update_xaxes(title_text="Hedges' g (cohort − reference)", zeroline=True)
    return _base_layout(fig, title, provenance, max(360, 80 + 24 * len(cells)))


def score_bars(frame: pd.DataFrame, value: str, title: str, provenance: str, value_label: str) -> go.Figure:
    """One bar per case (largest first), coloured by dataset; hover names the case's metadata."""
    fig = go.Figure()
    for dataset, group in frame.groupby("dataset", sort=True):
        fig.add_trace(go.Bar(x=group.case_id, y=group[value], name=str(dataset),
                             customdata=np.stack([group.sex.fillna("?"), group.age.map(_fmt),
                                                  group.pathologies.fillna("")], axis=1),
                             hovertemplate="<b>%{x}</b><br>" + html.escape(value_label) + " %{y:.4f}<br>sex "
                                           "%{customdata[0]}, age %{customdata[1]}<br>%{customdata[2]}<extra></extra>"))
    fig.update_xaxes(categoryorder="array", categoryarray=frame.case_id.tolist(), tickangle=-45, title_text="case")
    fig.update_yaxes(title_text=value_label)
    fig.update_layout(legend=dict(title="dataset", orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return _base_layout(fig, title, provenance, 420)


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
            customdata=np.stack([part.case_id, part.dataset, part.expected_low.map(_fmt),
                                 part.expected_high.map(_fmt)], axis=1),
            hovertemplate="case <b>%{customdata[0]}</b> (%{customdata[1]})<br>true %{x:.3f} · expected %{y:.3f} "
                          "[%{customdata[2]}, %{customdata[3]}]<extra></extra>"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999", dash="dot"),
                             hoverinfo="skip", name="expected = true"))
    fig.update_xaxes(title_text=f"true {dice_label}", range=[lo, hi])
    fig.update_yaxes(title_text=f"expected {dice_label} (no labels used)", range=[lo, hi])
    return _base_layout(fig, title, provenance, 460)


def reason_bars(reasons: pd.DataFrame, title: str, provenance: str) -> go.Figure:
    """A case's top outlier cells: contribution to its anomaly (path-length units), largest first."""
    labels = [f"{s} → {t}" for s, t in zip(reasons.source, reasons.target)]
    fig = go.Figure(go.Bar(y=labels, x=reasons.contribution, orientation="h",
                           marker=dict(color=np.where(reasons.contribution > 0, "#b2182b", "#2166ac")),
                           hovertemplate="<b>%{y}</b><br>contribution %{x:.3f} (tree depths)<extra></extra>",
                           showlegend=False))
    fig.update_yaxes(autorange="reversed", title_text="cell e(b → a)")
    fig.update_xaxes(title_text="contribution to the anomaly (shorter isolation path, tree depths)")
    return _base_layout(fig, title, provenance, max(320, 80 + 28 * len(reasons)))


def agreement_bars(agreement: pd.DataFrame, rois: dict[int, Roi], other_label: str, title: str,
                   provenance: str) -> go.Figure:
    """Mean Spearman rho of the two methods' class rows per class, with its bootstrap interval."""
    names = [roi_name(rois, t) for t in agreement.target_id]
    fig = go.Figure(go.Bar(
        x=names, y=agreement.spearman_mean, marker=dict(color="#4393c3"),
        error_y=dict(type="data", symmetric=False, array=agreement.spearman_high - agreement.spearman_mean,
                     arrayminus=agreement.spearman_mean - agreement.spearman_low, color="#333"),
        customdata=np.stack([agreement.spearman_median.map(_fmt), agreement.n_cases], axis=1),
        hovertemplate="<b>%{x}</b><br>mean rho %{y:.3f} (median %{customdata[0]})<br>%{customdata[1]} cases"
                      "<extra></extra>", name=f"vs {other_label}"))
    fig.update_xaxes(tickangle=-45, title_text="target class a")
    fig.update_yaxes(title_text="Spearman ρ, mean over cases", range=[-1.05, 1.05])
    return _base_layout(fig, title, provenance, 440)
