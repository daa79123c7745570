"""3-D surfaces of the predicted structures with pyvista (VTK SurfaceNets on the label map).

``label_surfaces`` needs no display (VTK filters only) and returns triangle meshes that
the page draws with Plotly (interactive in the browser, exportable). ``snapshot`` renders
an off-screen pyvista picture in a subprocess, so a crash or a missing OpenGL stack costs
a message, never the server. Both raise ``SurfaceUnavailable`` with the reason.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SNAPSHOT_TIMEOUT_S = 60


class SurfaceUnavailable(RuntimeError):
    """pyvista/VTK cannot produce the 3-D view here; the message says why."""


def label_surfaces(pred: np.ndarray, spacing, labels=None, smoothing: bool = True,
                   max_faces_per_label: int = 20000) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(label, vertices [n, 3] in mm, triangles [m, 3]) for every label > 0 present in ``pred``."""
    try:
        import pyvista as pv
    except Exception as err:  # noqa: BLE001 - any import failure means "no 3-D here"
        raise SurfaceUnavailable(f"pyvista is not available ({type(err).__name__}: {err})") from None
    pred = np.asarray(pred)
    present = [int(v) for v in np.unique(pred) if v > 0]
    wanted = present if labels is None else [l for l in present if l in set(labels)]
    if not wanted:
        return []
    grid = pv.ImageData(dimensions=pred.shape, spacing=tuple(float(s) for s in spacing))
    grid.point_data["labels"] = pred.ravel(order="F").astype(np.int32)
    try:
        surface = grid.contour_labels("all", scalars="labels", select_inputs=wanted, smoothing=smoothing,
                                      output_mesh_type="triangles")
    except Exception as err:  # noqa: BLE001
        raise SurfaceUnavailable(f"VTK could not extract surfaces ({type(err).__name__}: {err})") from None
    if surface.n_cells == 0:
        return []
    faces = np.asarray(surface.faces).reshape(-1, 4)[:, 1:]
    sides = np.asarray(surface.cell_data["boundary_labels"]).reshape(-1, 2)
    points = np.asarray(surface.points)
    out = []
    for label in wanted:
        mine = faces[(sides[:, 0] == label) | (sides[:, 1] == label)]
        if len(mine) > max_faces_per_label:
            mine = mine[:: int(np.ceil(len(mine) / max_faces_per_label))]
        if len(mine):
            used, inverse = np.unique(mine, return_inverse=True)
            out.append((label, points[used], inverse.reshape(-1, 3)))
    return out


def vertex_values(vertices_mm: np.ndarray, spacing, volume: np.ndarray, block) -> np.ndarray:
    """Values of a block-averaged volume (an artefact's ``attrvol_<c>``) at surface vertices in mm
    (``label_surfaces`` puts voxel i at i · spacing), trilinear."""
    from dashboard.imaging.artefact import sample_volume

    voxels = np.asarray(vertices_mm, dtype=float) / np.asarray(spacing, dtype=float)
    return sample_volume(volume, block, voxels)


def symmetric_top(values, percentile: float = 99.0) -> float:
    """A robust symmetric colour limit: the percentile of |values| over all surfaces (finite only)."""
    flat = np.concatenate([np.abs(np.asarray(v, dtype=float)).ravel() for v in values] or [np.zeros(0)])
    flat = flat[np.isfinite(flat)]
    return float(np.percentile(flat, percentile)) if flat.size else 0.0


def snapshot(npz_path: str | Path, window_size=(640, 480)) -> bytes:
    """PNG of the predicted structures rendered off-screen by pyvista (in a subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "snapshot.png"
        try:
            done = subprocess.run([sys.executable, "-m", "dashboard.imaging.surfaces", str(npz_path), str(target),
                                   str(window_size[0]), str(window_size[1])],
                                  capture_output=True, text=True, timeout=SNAPSHOT_TIMEOUT_S,
                                  cwd=str(Path(__file__).resolve().parent.parent))
        except subprocess.TimeoutExpired:
            raise SurfaceUnavailable(f"off-screen rendering took longer than {SNAPSHOT_TIMEOUT_S} s") from None
        if done.returncode != 0 or not target.exists():
            reason = (done.stderr or done.stdout).strip().splitlines()
            raise SurfaceUnavailable("off-screen rendering failed: " + (reason[-1] if reason else f"exit {done.returncode}"))
        return target.read_bytes()


def _render(npz_path: str, out_png: str, width: int, height: int) -> None:
    import pyvista as pv

    from dashboard.imaging.slices import label_color

    with np.load(npz_path) as npz:
        pred, spacing = npz["pred"], npz["spacing"] if "spacing" in npz.files else (1.0, 1.0, 1.0)
    plotter = pv.Plotter(off_screen=True, window_size=(width, height))
    for label, vertices, faces in label_surfaces(pred, spacing):
        mesh = pv.PolyData(vertices, np.hstack([np.full((len(faces), 1), 3), faces]).ravel())
        plotter.add_mesh(mesh, color=[c / 255 for c in label_color(label)], smooth_shading=True)
    plotter.view_xz()
    plotter.camera.elevation = 15
    plotter.screenshot(out_png)
    plotter.close()


if __name__ == "__main__":
    _render(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
