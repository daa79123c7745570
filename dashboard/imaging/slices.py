"""Case-viewer maths: slice orientation, CT windows, display resampling and overlays (numpy + SciPy).

Volumes are RAS+ ``[X, Y, Z]`` (docs/ARCHITECTURE.md). Slices are shown in radiological
convention: axial and coronal with the patient's right on the viewer's left, anterior
(axial) or superior (coronal, sagittal) at the top, sagittal with anterior on the left.
For all three views that is ``plane.T[::-1, ::-1]`` of the plane cut from the volume.

Display: a plane of ``rows x cols`` voxels with spacing ``(dy, dx)`` mm is resampled to an
isotropic display grid (``display_grid``), so the image has its physical aspect ratio
and coarse volumes are shown smoothly: CT by cubic interpolation, label maps through
interpolated one-hot indicators (their contours fall between voxels, not on voxel
edges), the attribution bilinearly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Name -> (width, level) in HU, as radiologists name them.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 40.0),
    "bone": (1800.0, 400.0),
    "abdomen": (400.0, 50.0),
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
DISPLAY_LONGEST_PX = 640     # display pixels along the longest side of a resampled slice
MAX_UPSAMPLING = 10.0
HU_PER_SCALED_UNIT = 2048.0  # the core maps HU [-1024, 1024] to [0, 1]


def window_label(name: str) -> str:
    """'lung · W1500 / L−600' (presets) or the name itself."""
    if name not in WINDOW_PRESETS:
        return name
    width, level = WINDOW_PRESETS[name]
    return f"{name} · W{width:g} / L{level:g}".replace("L-", "L−")


def label_color(label: int) -> tuple[int, int, int]:
    if label <= 0:
        return (0, 0, 0)
    return tuple(int(v) for v in LABEL_PALETTE[1 + (label - 1) % (len(LABEL_PALETTE) - 1)])


def hex_color(label: int) -> str:
    return "#%02x%02x%02x" % label_color(label)


# --- orientation ----------------------------------------------------------------------------------

def orient(plane: np.ndarray) -> np.ndarray:
    """Display orientation of a plane cut from a RAS volume (rows top-down, columns left-right)."""
    return np.asarray(plane).T[::-1, ::-1]


def plane_axes(view: str) -> tuple[int, int]:
    """(row axis, column axis) of the volume in a displayed plane; both run reversed on screen."""
    remaining = [a for a in range(3) if a != VIEWS[view]]
    return remaining[1], remaining[0]


def cut(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """The plane of ``volume`` at ``index`` along the view's axis, in display orientation."""
    axis = VIEWS[view]
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    return orient(np.take(volume, index, axis=axis))


def pixel_spacing(spacing, view: str) -> tuple[float, float]:
    """(row, column) spacing in mm of a displayed plane."""
    row_axis, col_axis = plane_axes(view)
    return float(spacing[row_axis]), float(spacing[col_axis])


def voxel_of_pixel(view: str, index: int, row: int, col: int, shape) -> tuple[int, int, int]:
    """Volume voxel (x, y, z) shown at display pixel (row, col) of the view's plane at ``index``."""
    row_axis, col_axis = plane_axes(view)
    voxel = [0, 0, 0]
    voxel[VIEWS[view]] = int(index)
    voxel[row_axis] = int(shape[row_axis]) - 1 - int(row)
    voxel[col_axis] = int(shape[col_axis]) - 1 - int(col)
    return tuple(voxel)


def pixel_of_voxel(view: str, voxel, shape) -> tuple[int, int]:
    """Display (row, col) of a voxel's projection onto the view's plane."""
    row_axis, col_axis = plane_axes(view)
    return int(shape[row_axis]) - 1 - int(voxel[row_axis]), int(shape[col_axis]) - 1 - int(voxel[col_axis])


# --- display resampling -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DisplayGrid:
    """A display grid over a plane of ``voxels`` (rows, cols) with ``spacing`` (dy, dx) mm: every voxel
    becomes ``factors`` (rows, cols) display pixels, chosen so that pixels are close to square; the
    figure places them at their exact size (``pixel_mm``), so the physical aspect ratio is exact."""

    voxels: tuple[int, int]
    spacing: tuple[float, float]
    factors: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.voxels[0] * self.factors[0], self.voxels[1] * self.factors[1]

    @property
    def pixel_mm(self) -> tuple[float, float]:
        return self.spacing[0] / self.factors[0], self.spacing[1] / self.factors[1]

    @property
    def extent_mm(self) -> tuple[float, float]:
        return self.voxels[0] * self.spacing[0], self.voxels[1] * self.spacing[1]


def display_grid(voxels: tuple[int, int], spacing: tuple[float, float],
                 longest_px: int = DISPLAY_LONGEST_PX, max_upsampling: float = MAX_UPSAMPLING) -> DisplayGrid:
    """Integer upsampling per axis towards square pixels of about ``longest_mm / longest_px``: never
    finer than the finest voxel side / ``max_upsampling``, never coarser than the finest voxel side
    (a plane that is already fine is shown as it is)."""
    finest = float(min(spacing))
    longest_mm = max(voxels[0] * spacing[0], voxels[1] * spacing[1])
    pixel = min(max(longest_mm / longest_px, finest / max_upsampling), finest)
    factors = tuple(max(1, int(round(s / pixel))) for s in spacing)
    return DisplayGrid(tuple(int(v) for v in voxels), (float(spacing[0]), float(spacing[1])), factors)


def resample(plane: np.ndarray, grid: DisplayGrid, order: int = 3) -> np.ndarray:
    """A plane (voxel grid) on the display grid: spline interpolation of the given order with pixel
    areas aligned (``grid_mode``) and edges repeated; float32."""
    plane = np.asarray(plane, dtype=np.float32)
    if grid.factors == (1, 1):
        return plane
    return ndimage.zoom(plane, grid.factors, order=order, mode="nearest", grid_mode=True)


def resample_labels(labels: np.ndarray, grid: DisplayGrid, order: int = 3, margin: int = 3) -> np.ndarray:
    """A label plane on the display grid: each pixel takes the label whose interpolated one-hot
    indicator is largest, so boundaries run between voxel centres instead of along voxel edges.
    Each indicator is interpolated in its label's bounding box (plus ``margin`` voxels) only."""
    labels = np.asarray(labels)
    if grid.factors == (1, 1):
        return labels
    fr, fc = grid.factors
    out = np.zeros(grid.shape, dtype=labels.dtype)
    best = np.full(grid.shape, -np.inf, dtype=np.float32)
    total = np.zeros(grid.shape, dtype=np.float32)         # background's indicator is 1 - total
    for label in (int(v) for v in np.unique(labels)):
        if label == 0:
            continue
        rows, cols = np.nonzero(labels == label)
        r0, r1 = max(rows.min() - margin, 0), min(rows.max() + margin + 1, labels.shape[0])
        c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin + 1, labels.shape[1])
        weight = ndimage.zoom((labels[r0:r1, c0:c1] == label).astype(np.float32), grid.factors, order=order,
                              mode="nearest", grid_mode=True)
        box = np.s_[r0 * fr:r1 * fr, c0 * fc:c1 * fc]
        better = weight > best[box]
        out[box][better] = label
        best[box][better] = weight[better]
        total[box] += weight
    out[1.0 - total > best] = 0
    return out


# --- CT window and overlays --------------------------------------------------------------------------

def window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """CT window to grey values in [0, 1]."""
    width = max(float(width), 1.0)
    return np.clip((np.asarray(hu, dtype=float) - (level - width / 2.0)) / width, 0.0, 1.0)


def boundaries(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Pixels of a label map that touch a different label (4-neighbourhood), labels > 0 only;
    ``thickness`` > 1 widens the line inwards (for display grids much finer than the screen)."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    if thickness > 1:
        edge = ndimage.binary_dilation(edge, iterations=thickness - 1)
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


@dataclass(frozen=True)
class AttributionScale:
    """Symmetric colour scale of an attribution: |values| below ``threshold`` are hidden, ``top`` is
    full colour; ``n_nonfinite`` counts stored values that were inf/NaN (left out)."""

    threshold: float
    top: float
    percentile: float
    n_nonfinite: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.top > 0


def attribution_scale(values, percentile: float) -> AttributionScale:
    """The scale of one or several attribution planes (finite non-zero |values| only)."""
    arrays = values if isinstance(values, (list, tuple)) else [values]
    flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays if a is not None] or [np.zeros(0)])
    finite = np.isfinite(flat)
    magnitude = np.abs(flat[finite])
    nonzero = magnitude[magnitude > 0]
    percentile = float(np.clip(percentile, 0, 100))
    if nonzero.size == 0:
        return AttributionScale(0.0, 0.0, percentile, int((~finite).sum()))
    return AttributionScale(float(np.percentile(nonzero, percentile)), float(nonzero.max()), percentile,
                            int((~finite).sum()))


def attribution_alpha(magnitude: np.ndarray, scale: AttributionScale, opacity: float) -> np.ndarray:
    """Overlay opacity of |values|: 0 below the threshold, rising with sqrt(|v| / top)."""
    magnitude = np.asarray(magnitude, dtype=float)
    if scale.is_empty:
        return np.zeros_like(magnitude)
    strength = np.clip(magnitude / scale.top, 0, 1)
    visible = (magnitude >= scale.threshold) & (magnitude > 0)
    return np.where(visible, np.clip(opacity, 0, 1) * np.sqrt(strength), 0.0)


def attribution_colorscale(scale: AttributionScale, opacity: float, background: float = 128.0,
                           n: int = 41) -> list[list]:
    """Plotly colour scale on [-top, top] that matches ``compose``'s blend over a mid-grey CT."""
    if scale.is_empty:
        return [[0.0, "rgb(128,128,128)"], [1.0, "rgb(128,128,128)"]]
    stops = []
    for k in range(n):
        fraction = k / (n - 1)
        value = (2 * fraction - 1) * scale.top
        alpha = float(attribution_alpha(np.array(abs(value)), scale, opacity))
        colour = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
        rgb = (1 - alpha) * background + alpha * colour
        stops.append([fraction, "rgb(%d,%d,%d)" % tuple(int(round(c)) for c in rgb)])
    return stops


def compose(hu: np.ndarray, pred: np.ndarray | None, gt: np.ndarray | None, attr: np.ndarray | None,
            style: OverlayStyle, scale: AttributionScale | None = None, line_px: int = 1) -> np.ndarray:
    """RGB uint8 image: windowed CT, prediction in label colours (filled or outlined), ground truth
    as white outlines, and the attribution on a symmetric diverging scale (red positive, blue
    negative). ``scale`` defaults to this plane's own; ``line_px`` is the outline thickness."""
    rgb = np.repeat(window(hu, style.width, style.level)[..., None] * 255.0, 3, axis=2)
    if style.show_pred and pred is not None:
        mask = boundaries(pred, line_px) if style.pred_outline else pred > 0
        colours = LABEL_PALETTE[1 + (pred[mask].astype(int) - 1) % (len(LABEL_PALETTE) - 1)]
        a = 0.9 if style.pred_outline else np.clip(style.label_opacity, 0, 1)
        rgb[mask] = (1 - a) * rgb[mask] + a * colours
    if style.show_gt and gt is not None:
        edge = boundaries(gt, line_px)
        rgb[edge] = 0.1 * rgb[edge] + 0.9 * 255.0       # ground truth: white outlines
    if style.show_attr and attr is not None and attr.shape == hu.shape:
        values = np.nan_to_num(np.asarray(attr, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
        scale = scale or attribution_scale(values, style.hide_below_percentile)
        alpha = attribution_alpha(np.abs(values), scale, style.attr_opacity)[..., None]
        colour = np.where((values >= 0)[..., None], POSITIVE_RGB, NEGATIVE_RGB)
        rgb = (1 - alpha) * rgb + alpha * colour
    return np.clip(rgb, 0, 255).astype(np.uint8)


# --- what the values are ------------------------------------------------------------------------------

def attribution_unit(method: str, params: dict | None = None) -> tuple[str, str]:
    """(short unit for a colour bar, one sentence on what the values are) of a run's attributions."""
    params = params or {}
    aggregated = "mean" if params.get("aggregation", params.get("reduce")) == "mean" else "sum"
    f_hat = f"f̂ (the {aggregated} of the class's logits over its predicted voxels)"
    per_unit = f"logit per unit of scaled intensity (1 unit = {HU_PER_SCALED_UNIT:g} HU)"
    method = str(method).lower()
    if method == "vg":
        return "∂f̂/∂x [logit / scaled unit]", f"Vanilla gradient ∂f̂/∂x of {f_hat}: {per_unit}."
    if method == "smoothgrad":
        return ("mean ∂f̂/∂x [logit / scaled unit]",
                f"SmoothGrad: mean gradient ∂f̂/∂x of {f_hat} over noisy copies of the scan: {per_unit}.")
    if method == "ig":
        return ("(x − x′)·∇f̂ [logit]", f"Integrated Gradients of {f_hat}, in logit units: the values of a "
                "class add up to f̂(x) − f̂(baseline).")
    if method == "kernelshap":
        value = str(params.get("value", "logit"))
        unit = "logit" if value == "logit" else f"{value} score"
        return (f"Shapley value [{unit}]", "KernelSHAP: each supervoxel's Shapley value of "
                + (f"{f_hat}, in logit units" if value == "logit" else f"the {value} score, in its units")
                + ", shown at every voxel of the unit.")
    if method == "causal":
        return "effect on f̂ [logit]", f"Regional intervention effect on {f_hat}, in logit units."
    if method == "gradcam":
        layer = params.get("layer") or "the network's default layer"
        return ("Grad-CAM [weighted activation]", f"Seg-Grad-CAM of {f_hat}: feature maps of {layer} weighted by "
                "their mean gradients, ReLU, upsampled to the scan; non-negative, in activation × gradient units.")
    if method == "guided_backprop":
        return ("guided ∂f̂/∂x", f"Guided Backprop of {f_hat}, a negative control (Adebayo et al. 2018 found it "
                "almost unchanged when a model's weights are randomised): a baseline, not evidence about the model.")
    return "attribution", f"Attribution values of method {method}."


@dataclass(frozen=True)
class ViewPlanes:
    """Everything drawn in one view: the planes and a note on the attribution."""

    hu: np.ndarray
    pred: np.ndarray | None
    gt: np.ndarray | None
    attr: np.ndarray | None
    note: str
    exact: bool = True      # attr is the stored full-resolution plane (not the block-averaged volume)


@dataclass(frozen=True)
class RenderedView:
    """A view ready to draw: RGB on the display grid plus what the hover and the colour bar need."""

    rgb: np.ndarray
    grid: DisplayGrid
    planes: ViewPlanes


def render_view(planes: ViewPlanes, spacing: tuple[float, float], style: OverlayStyle,
                scale: AttributionScale | None, longest_px: int = DISPLAY_LONGEST_PX) -> RenderedView:
    """Resample a view's planes to its isotropic display grid and composite them."""
    grid = display_grid(planes.hu.shape, spacing, longest_px)
    hu = resample(planes.hu, grid, order=3)
    pred = None if planes.pred is None or not style.show_pred else resample_labels(planes.pred, grid)
    gt = None if planes.gt is None or not style.show_gt else resample_labels(planes.gt, grid)
    attr = None
    if planes.attr is not None and style.show_attr:
        attr = resample(np.nan_to_num(planes.attr, nan=0.0, posinf=0.0, neginf=0.0), grid, order=1)
    line_px = max(1, int(math.ceil(max(grid.shape) / 320)))
    return RenderedView(compose(hu, pred, gt, attr, style, scale, line_px), grid, planes)


def pixel_centre_mm(row: float, col: float, spacing: tuple[float, float]) -> tuple[float, float]:
    """Position (mm from the top-left corner) of a voxel-grid pixel's centre in a displayed plane."""
    return (row + 0.5) * spacing[0], (col + 0.5) * spacing[1]


def hover_points(view: str, index: int, planes: ViewPlanes, volume_shape, spacing: tuple[float, float],
                 max_side: int = 128) -> dict:
    """Invisible, clickable points over a displayed plane (every voxel, or every k-th on large planes):
    positions in mm and customdata rows (x, y, z, HU, attribution) for ``figures.slice_image``."""
    n_rows, n_cols = planes.hu.shape
    step = max(1, int(math.ceil(max(n_rows, n_cols) / max_side)))
    rows, cols = np.meshgrid(np.arange(0, n_rows, step), np.arange(0, n_cols, step), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    row_axis, col_axis = plane_axes(view)
    voxels = np.zeros((rows.size, 3), dtype=int)
    voxels[:, VIEWS[view]] = int(index)
    voxels[:, row_axis] = int(volume_shape[row_axis]) - 1 - rows
    voxels[:, col_axis] = int(volume_shape[col_axis]) - 1 - cols
    attr = planes.attr[rows, cols] if planes.attr is not None else np.full(rows.size, np.nan)
    customdata = np.column_stack([voxels, planes.hu[rows, cols].astype(int), np.asarray(attr, dtype=float)])
    y, x = pixel_centre_mm(rows, cols, spacing)
    return {"x": x, "y": y, "customdata": customdata, "with_attr": planes.attr is not None,
            "size": max(4, 8 * step)}
