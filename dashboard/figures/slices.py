"""Case images: a composited CT slice at its physical size (scale bar, crosshair, attribution colour bar)
and the 3-D surfaces of the predicted structures."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

from dashboard.analytics import Roi
from dashboard.figures.base import base_layout

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
    fig = base_layout(fig, title, provenance, height or slice_height(aspect, colorbar is not None))
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
    return base_layout(fig, title, provenance, 680)


# Diverging scale of the surfaces: blue (negative) - light grey (0) - red (positive), as on the slices.
SURFACE_DIVERGING = [[0.0, "rgb(43,131,186)"], [0.5, "rgb(225,225,225)"], [1.0, "rgb(215,25,28)"]]
