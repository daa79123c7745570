"""The case viewer's 3-D view: surfaces of the predicted structures (pyvista), coloured by a class's
attribution or in label colours, and pyvista's off-screen snapshot."""
from __future__ import annotations

import json
from dataclasses import dataclass

from dashboard import case_view, compute
from dashboard.analytics import Roi
from dashboard.context import ViewContext
from dashboard.imaging import slices, surfaces
from dashboard.views.case_viewer import Artefact


@dataclass
class Surfaces:
    problem: str = ""
    view: case_view.SurfaceView | None = None


def case_surfaces(ctx: ViewContext, shown: Artefact, case_id: str, target: Roi, by_attribution: bool) -> Surfaces:
    rois_by_channel = tuple((c, Roi(r.roi_id, r.name, r.grp, slices.hex_color(c), True))
                            for r in ctx.class_rois() if (c := ctx.channel_of(r)) is not None)
    try:
        return Surfaces("", case_view.surface_view(shown.path, shown.mtime_ns, rois_by_channel, ctx.channel_of(target),
                                                   target.name, by_attribution, ctx.method,
                                                   json.dumps(ctx.params, sort_keys=True, default=str),
                                                   f"Predicted structures · case {case_id}",
                                                   f"{ctx.run_id} · case {case_id}"))
    except surfaces.SurfaceUnavailable as err:
        return Surfaces(f"No 3-D view here: {err}.")


@dataclass
class Snapshot:
    problem: str = ""
    png: bytes = b""
    file_name: str = ""


def snapshot(ctx: ViewContext, shown: Artefact, case_id: str) -> Snapshot:
    try:
        return Snapshot("", compute.case_snapshot(shown.path, shown.mtime_ns),
                        f"agg2exp_surfaces-{case_id}_{ctx.run_id}_pyvista.png")
    except surfaces.SurfaceUnavailable as err:
        return Snapshot(f"pyvista cannot render off-screen here: {err}.")
