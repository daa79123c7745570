"""The case viewer's cached renders: artefact -> slice/surface maths -> Plotly figures, cached per artefact
version (the cache layer under ``dashboard.views.case_viewer``, beside ``compute``; views do not import
Streamlit).

The maths is in ``dashboard.imaging`` (``artefact``: what a view shows of a class; ``slices``: rendering;
``surfaces``), the drawing in ``dashboard.figures``. Only the planes that changed are re-rendered when the
crosshair moves.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import analytics, compute, data, figures
from dashboard.imaging import artefact, slices, surfaces
from dashboard.analytics import Roi


@dataclass(frozen=True)
class SliceView:
    """One rendered view: the figure and a note on its attribution ("" when nothing to say)."""

    figure: go.Figure
    note: str


def artifact_of(path: str, mtime_ns: int) -> artefact.CaseArtifact:
    return artefact.CaseArtifact(data.load_artifact(path, mtime_ns))


@dataclass(frozen=True)
class _Rendered:
    """The part of a view that does not depend on the crosshair (cached per plane)."""

    source: tuple[str, tuple[int, int]]
    pixel_mm: tuple[float, float]
    hover: dict | None
    colorbar: dict | None
    note: str


@st.cache_data(max_entries=96, show_spinner=False)
def _render(path: str, mtime_ns: int, view: str, index: int, channel: int | None, style: slices.OverlayStyle,
            method: str, params_json: str, clickable: bool) -> _Rendered:
    artifact = artifact_of(path, mtime_ns)
    planes = artefact.view_planes(artifact, view, index, channel)
    spacing = slices.pixel_spacing(artifact.spacing, view)
    scale = artefact.class_scale(artifact, channel, style.hide_below_percentile, planes.exact)
    rendered = slices.render_view(planes, spacing, style, scale)
    colorbar = None
    if style.show_attr and planes.attr is not None and not scale.is_empty:
        colorbar = dict(colorscale=slices.attribution_colorscale(scale, style.attr_opacity), top=scale.top,
                        title=artefact.colorbar_title(method, json.loads(params_json or "{}"), scale, planes.exact))
    hover = slices.hover_points(view, index, planes, artifact.ct.shape, spacing) if clickable else None
    return _Rendered(figures.png_source(rendered.rgb), rendered.grid.pixel_mm, hover, colorbar,
                     planes.note if style.show_attr else "")


def slice_view(path: str, mtime_ns: int, view: str, voxel: tuple[int, int, int], channel: int | None,
               class_name: str, style: slices.OverlayStyle, method: str, params_json: str, provenance: str,
               crosshair: bool = True, clickable: bool = True) -> SliceView:
    """The figure of one view through ``voxel`` (its index along the view's axis) with the class's
    attribution, the crosshair at the other two planes and the attribution colour bar. The plane's
    rendering is cached, so moving the crosshair within a plane costs only the figure."""
    artifact = artifact_of(path, mtime_ns)
    axis = slices.VIEWS[view]
    index = int(np.clip(voxel[axis], 0, artifact.ct.shape[axis] - 1))
    shown = _render(path, mtime_ns, view, index, channel, style, method, params_json, clickable)
    spacing = slices.pixel_spacing(artifact.spacing, view)
    cross = slices.pixel_centre_mm(*slices.pixel_of_voxel(view, voxel, artifact.ct.shape), spacing) \
        if crosshair else None
    title = f"{view} {slices.AXIS_KEYS[axis]} = {index} · {class_name}"
    figure = figures.slice_image(shown.source, shown.pixel_mm, title, provenance, slices.CORNER_LABELS[view],
                                 hover=shown.hover, crosshair_mm=cross, colorbar=shown.colorbar)
    return SliceView(figure, shown.note)


@dataclass(frozen=True)
class SurfaceView:
    figure: go.Figure
    note: str


@st.cache_data(max_entries=16, show_spinner="Extracting surfaces with pyvista…")
def surface_view(path: str, mtime_ns: int, rois_by_channel: tuple[tuple[int, Roi], ...], channel: int | None,
                 class_name: str, by_attribution: bool, method: str, params_json: str, title: str,
                 provenance: str) -> SurfaceView:
    """Surfaces of the predicted structures, coloured by the class's attribution (sampled from the
    artefact's block-averaged volume at every vertex) or in label colours. Raises
    ``surfaces.SurfaceUnavailable`` with the reason when VTK cannot make them."""
    artifact = artifact_of(path, mtime_ns)
    names = dict(rois_by_channel)
    meshes = compute.case_surfaces(path, mtime_ns)
    shown = [(names[label] if label in names else Roi(-1, f"label {label}", "other", slices.hex_color(label), True),
              vertices, faces) for label, vertices, faces in meshes]
    stored = artifact.attribution_volume(channel) if (by_attribution and channel is not None) else None
    if not by_attribution:
        return SurfaceView(figures.surface_mesh(shown, title, provenance), "")
    if stored is None:
        return SurfaceView(figures.surface_mesh(shown, title, provenance),
                           "This artefact holds no attribution volume (written before `attrvol_<c>` was "
                           "stored): surfaces in label colours; recompute the run to colour them.")
    volume, block = stored
    values = [surfaces.vertex_values(vertices, artifact.spacing, volume, block) for _, vertices, _ in shown]
    top = surfaces.symmetric_top(values)
    unit, _ = slices.attribution_unit(method, json.loads(params_json or "{}"))
    figure = figures.surface_mesh(shown, title, provenance, values=values, top=top,
                                  value_title=f"{class_name}: {unit}", highlight=class_name)
    blocks = "×".join(str(int(b)) for b in block)
    return SurfaceView(figure, f"Attribution of {class_name} sampled at each vertex from the {blocks}-voxel "
                               f"block-averaged volume; colour limits ±{top:.3g} (99th percentile of |value| "
                               "on the surfaces).")


def expected_dice_table(estimates, rois: dict) -> pd.DataFrame:
    """One case's expected Dice per class with the true Dice where known (display names)."""
    names = [analytics.AVERAGE_TARGET_TITLE if int(c) == AVERAGE_TARGET else (rois[int(c)].name if int(c) in rois
                                                                          else str(c)) for c in estimates.class_id]
    return pd.DataFrame({"class": names, "expected": estimates.estimate.round(4), "low": estimates.low.round(4),
                         "high": estimates.high.round(4), "true Dice": estimates.dice.round(4),
                         "likely_failure": estimates.likely_failure.astype(bool)})
