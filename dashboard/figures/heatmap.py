"""The heat-map base every matrix figure is drawn on: target rows x source columns, cell hover
(target, source, then what the variant adds), colour bar, RoI-coloured axis ticks.

Variants (``matrix``, ``comparison``, ``causal``) say only what their cells hold.
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.figures.base import fmt, roi_label

HOVER_HEAD = "target <b>%{customdata[0]}</b><br>source <b>%{customdata[1]}</b><br>"
HOVER_TAIL = "<extra></extra>"


def cell_data(targets: Sequence, sources: Sequence, columns: Sequence[np.ndarray]) -> np.ndarray:
    """customdata of a heat map: [target name, source name, *columns] per cell (object array n x m x k)."""
    n_rows, n_cols = len(targets), len(sources)
    custom = np.empty((n_rows, n_cols, 2 + len(columns)), dtype=object)
    custom[:, :, 0] = np.array([roi_label(t, tick=False) for t in targets], dtype=object)[:, None]
    custom[:, :, 1] = np.array([roi_label(s, tick=False) for s in sources], dtype=object)[None, :]
    for k, column in enumerate(columns):
        custom[:, :, 2 + k] = column
    return custom


def texts(values: np.ndarray, to_text) -> np.ndarray:
    """``to_text`` of every cell, as an object array of the matrix's shape."""
    values = np.asarray(values)
    out = np.empty(values.shape, dtype=object)
    for index, value in np.ndenumerate(values):
        out[index] = to_text(value)
    return out


def counts_text(counts: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Per-cell counts as Python ints ('' without counts or where a count is missing)."""
    if counts is None:
        return texts(np.zeros(shape), lambda _: "")
    return texts(counts, lambda v: int(v) if np.isfinite(v) else "")


def colorbar(title: str, **more) -> dict:
    return dict(title=dict(text=title, side="right"), thickness=12, **more)


def cell_heatmap(z: np.ndarray, targets: Sequence, sources: Sequence, columns: Sequence[np.ndarray],
                 lines: str, **trace) -> go.Heatmap:
    """A heat-map trace whose hover names target and source, then ``lines`` (which refer to
    ``columns`` as customdata[2], [3] …)."""
    n_rows, n_cols = np.shape(z)
    return go.Heatmap(z=z, x=list(range(n_cols)), y=list(range(n_rows)),
                      customdata=cell_data(targets, sources, columns),
                      hovertemplate=HOVER_HEAD + lines + HOVER_TAIL, xgap=1, ygap=1, **trace)


def cell_axes(fig: go.Figure, targets: Sequence, sources: Sequence, column_title: str = "source RoI b",
              label_side: str = "left", **where) -> None:
    """Ticks of the cells: RoI names in their group colours (sources turned), targets top-down."""
    n_rows, n_cols = len(targets), len(sources)
    fig.update_xaxes(tickvals=list(range(n_cols)), ticktext=[roi_label(s) for s in sources], tickangle=-45,
                     title_text=column_title, side="bottom", range=[-0.5, n_cols - 0.5], **where)
    fig.update_yaxes(tickvals=list(range(n_rows)), ticktext=[roi_label(t) for t in targets], side=label_side,
                     title_text="target class a", range=[n_rows - 0.5, -0.5], **where)


def height_for(n_rows: int) -> int:
    """A height at which every row keeps a readable cell (28 px) under the title and the turned ticks."""
    return max(420, 60 + 28 * n_rows + 140)


def heat_trace(fig: go.Figure) -> go.Heatmap:
    return next(t for t in fig.data if isinstance(t, go.Heatmap))


def add_hover_column(fig: go.Figure, label: str, column: np.ndarray) -> go.Figure:
    """Append one line ``label: value`` to the hover of the figure's heat map (cells in its order)."""
    heat = heat_trace(fig)
    custom = np.asarray(heat.customdata, dtype=object)
    extra = np.empty(custom.shape[:2] + (1,), dtype=object)
    extra[:, :, 0] = column
    heat.customdata = np.concatenate([custom, extra], axis=2)
    heat.hovertemplate = heat.hovertemplate.replace(
        HOVER_TAIL, f"<br>{label}: %{{customdata[{custom.shape[2]}]}}{HOVER_TAIL}")
    return fig


def add_intervals(fig: go.Figure, low: np.ndarray, high: np.ndarray, label: str = "95 % CI") -> go.Figure:
    """Each cell's interval '[low, high]' in the hover of the figure's heat map."""
    bounds = np.empty(np.shape(low), dtype=object)
    for (i, j), _ in np.ndenumerate(bounds):
        bounds[i, j] = f"[{fmt(low[i, j])}, {fmt(high[i, j])}]"
    return add_hover_column(fig, html.escape(label), bounds)


def add_sampling_noise(fig: go.Figure, se: np.ndarray, n_samples: int) -> go.Figure:
    """Each cell's SmoothGrad sampling noise in the heat map's hover: "± SE (n noise samples)"."""
    noise = texts(se, lambda v: "n/a" if not np.isfinite(v) else f"± {v:.4f} ({n_samples} noise samples)")
    return add_hover_column(fig, "sampling noise (SE)", noise)


def add_reliability(fig: go.Figure, icc: np.ndarray, threshold: float, repeats: str) -> go.Figure:
    """Each cell's test-retest ICC in the heat map's hover, flagged below ``threshold``."""
    def line(v):
        if not np.isfinite(v):
            return "n/a"
        return f"{v:.2f} ⚠ below {threshold:g}: this cell's value depends on the seed" if v < threshold else f"{v:.2f}"
    return add_hover_column(fig, f"test-retest ICC ({html.escape(repeats)})", texts(icc, line))
