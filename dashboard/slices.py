"""Case-viewer maths: slice orientation, CT windows and overlays composited to RGB (pure numpy).

Volumes are RAS+ ``[X, Y, Z]`` (docs/ARCHITECTURE.md). Slices are shown in radiological
convention: axial and coronal with the patient's right on the viewer's left, anterior
(axial) or superior (coronal, sagittal) at the top, sagittal with anterior on the left.
For all three views that is ``plane.T[::-1, ::-1]`` of the plane cut from the volume.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_PRESETS: dict[str, tuple[float, float]] = {   # name -> (width, level) in HU
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "bone": (2000.0, 500.0),
}
VIEWS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}    # view -> fixed volume axis
AXIS_KEYS = {0: "x", 1: "y", 2: "z"}
CORNER_LABELS = {"axial": ("R", "L"), "coronal": ("R", "L"), "sagittal": ("A", "P")}
# Distinct label colours (channel index -> RGB); 0 = background is never drawn.
LABEL_PALETTE = np.array([          # no pure reds or blues: those belong to the attribution
    (0, 0, 0), (255, 165, 0), (60, 180, 75), (255, 225, 25), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 190, 140), (190, 190, 190),
    (255, 120, 200), (140, 90, 255)], dtype=float)
POSITIVE_RGB = np.array([215.0, 25.0, 28.0])
NEGATIVE_RGB = np.array([43.0, 131.0, 186.0])


def label_color(label: int) -> tuple[int, int, int]:
    if label <= 0:
        return (0, 0, 0)
    return tuple(int(v) for v in LABEL_PALETTE[1 + (label - 1) % (len(LABEL_PALETTE) - 1)])


def orient(plane: np.ndarray) -> np.ndarray:
    """Display orientation of a plane cut from a RAS volume (rows top-down, columns left-right)."""
    return np.asarray(plane).T[::-1, ::-1]


def cut(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """The plane of ``volume`` at ``index`` along the view's axis, in display orientation."""
    axis = VIEWS[view]
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    return orient(np.take(volume, index, axis=axis))


def pixel_spacing(spacing, view: str) -> tuple[float, float]:
    """(row, column) spacing in mm of a displayed plane."""
    remaining = [a for a in range(3) if a != VIEWS[view]]      # plane axes (first = columns after .T)
    return float(spacing[remaining[1]]), float(spacing[remaining[0]])


def window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """CT window to grey values in [0, 1]."""
    width = max(float(width), 1.0)
    return np.clip((np.asarray(hu, dtype=float) - (level - width / 2.0)) / width, 0.0, 1.0)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label map that touch a different label (4-neighbourhood), labels > 0 only."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    return edge & (lab > 0)


@dataclass(frozen=True)
class OverlayStyle:
    """How to draw a slice: CT window, which overlays, their opacity, attribution threshold."""

    width: float = 1500.0
    level: float = -600.0
    show_pred: bool = True
    show_gt: bool = False
    show_attr: bool = True
    label_opacity: float = 0.35
    attr_opacity: float = 0.7
    hide_below_percentile: float = 80.0
    pred_outline: bool = False      # outline instead of fill (keeps the attribution colours readable)


def attribution_scale(attr: np.ndarray, percentile: float) -> tuple[float, float]:
    """(threshold, symmetric max) of |attr|: values below the percentile of |attr| > 0 are hidden."""
    magnitude = np.abs(np.asarray(attr, dtype=float))
    nonzero = magnitude[magnitude > 0]
    if nonzero.size == 0:
        return 0.0, 0.0
    return float(np.percentile(nonzero, np.clip(percentile, 0, 100))), float(nonzero.max())


def compose(hu: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None, attr: np.ndarray | None,
            style: OverlayStyle) -> np.ndarray:
    """RGB uint8 image: windowed CT, prediction in label colours (filled or outlined), ground truth
    as white outlines, and the attribution on a symmetric diverging scale (red positive, blue negative)."""
    rgb = np.repeat(window(hu, style.width, style.level)[..., None] * 255.0, 3, axis=2)
    if style.show_pred and pred is not None:
        mask = boundaries(pred) if style.pred_outline else pred > 0
        colours = LABEL_PALETTE[1 + (pred.astype(int) - 1) % (len(LABEL_PALETTE) - 1)]
        a = 0.9 if style.pred_outline else np.clip(style.label_opacity, 0, 1)
        rgb[mask] = (1 - a) * rgb[mask] + a * colours[mask]
    if style.show_gt and gt is not None:
        edge = boundaries(gt)
        rgb[edge] = 0.1 * rgb[edge] + 0.9 * 255.0       # ground truth: white outlines
    if style.show_attr and attr is not None and attr.shape == hu.shape:
        values = np.asarray(attr, dtype=float)
        threshold, top = attribution_scale(values, style.hide_below_percentile)
        if top > 0:
            strength = np.clip(np.abs(values) / top, 0, 1)
            visible = (np.abs(values) >= threshold) & (np.abs(values) > 0)
            alpha = (np.clip(style.attr_opacity, 0, 1) * np.sqrt(strength))[..., None]
            colour = np.where((values >= 0)[..., None], POSITIVE_RGB, NEGATIVE_RGB)
            blended = (1 - alpha) * rgb + alpha * colour
            rgb = np.where(visible[..., None], blended, rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class CaseArtifact:
    """Typed view of one npz artefact (keys of docs/ARCHITECTURE.md)."""

    arrays: dict

    @property
    def ct(self) -> np.ndarray:
        return self.arrays["ct"]

    @property
    def pred(self) -> np.ndarray | None:
        return self.arrays.get("pred")

    @property
    def gt(self) -> np.ndarray | None:
        return self.arrays.get("gt")

    @property
    def spacing(self) -> tuple[float, float, float]:
        spacing = self.arrays.get("spacing")
        return tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0, 1.0)

    def class_index(self, channel: int) -> np.ndarray | None:
        """Slice indices (x, y, z) of the class's largest cross-sections, if stored."""
        index = self.arrays.get(f"index_{channel}")
        return None if index is None else np.asarray(index, dtype=int)

    def attribution(self, channel: int, view: str) -> np.ndarray | None:
        """The stored attribution plane of a class for a view (display orientation), if any."""
        plane = self.arrays.get(f"attr_{channel}_{AXIS_KEYS[VIEWS[view]]}")
        return None if plane is None else orient(plane.astype(np.float32))

    def explained_channels(self) -> list[int]:
        return sorted(int(k.split("_")[1]) for k in self.arrays if k.startswith("index_"))

    def extra_rois(self) -> list[str]:
        return sorted(k[4:] for k in self.arrays if k.startswith("roi_"))


def hex_color(label: int) -> str:
    return "#%02x%02x%02x" % label_color(label)


@dataclass(frozen=True)
class ViewPlanes:
    """Everything drawn in one view: the planes and a note on the attribution."""

    hu: np.ndarray
    pred: np.ndarray | None
    gt: np.ndarray | None
    attr: np.ndarray | None
    note: str


def view_planes(artifact: CaseArtifact, view: str, index: int, channel: int | None) -> ViewPlanes:
    """Planes of one view at ``index``; the class's attribution only where it was stored."""
    axis = VIEWS[view]
    pred = None if artifact.pred is None else cut(artifact.pred, view, index)
    gt = None if artifact.gt is None else cut(artifact.gt, view, index)
    attr, note = None, ""
    stored = None if channel is None else artifact.class_index(channel)
    if channel is None or stored is None:
        note = "no attribution stored for this class"
    elif int(stored[axis]) != int(index):
        note = f"attribution stored at slice {int(stored[axis])} only"
    else:
        attr = artifact.attribution(channel, view)
        note = "" if attr is not None else "no attribution plane for this view"
    return ViewPlanes(cut(artifact.ct, view, index), pred, gt, attr, note)
