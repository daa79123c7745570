"""How alike two attribution maps are: the measures of the sanity checks.

Spearman rank correlation (SciPy) of |attribution| and of signed attribution over the voxels (a fixed
random sample of them above ``max_voxels``), SSIM (scikit-image) of the central axial slice of the
max-normalised |attribution|, the rank correlation of two Agg2Exp matrix rows, and the Sobel edge
magnitude of the CT (``scipy.ndimage.sobel``) for the edge-detector control.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage, stats
from skimage.metrics import structural_similarity

VOXEL_METRICS = ("spearman_abs", "spearman_signed", "ssim")
ROW_METRIC = "row_spearman"
METRICS = VOXEL_METRICS + (ROW_METRIC,)
MIN_SSIM_WINDOW = 3


def voxel_sample(shape, max_voxels: int, seed: int = 0) -> np.ndarray | None:
    """Flat indices of a fixed random voxel sample, or None (every voxel) for small volumes."""
    size = int(np.prod(shape))
    if size <= max_voxels:
        return None
    return np.sort(np.random.default_rng(seed).choice(size, max_voxels, replace=False))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two equally long vectors; NaN where either is constant (undefined)."""
    a, b = np.ravel(a), np.ravel(b)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic)


def central_slice_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the central slice along the last (axial) axis of |a| and |b|, each scaled to [0, 1] by its
    maximum (Adebayo et al. compare normalised maps); NaN for slices smaller than a 3x3 window."""
    z = a.shape[-1] // 2
    x, y = (np.abs(m[..., z]).astype(np.float64) for m in (a, b))
    x, y = (m / m.max() if m.max() > 0 else m for m in (x, y))
    window = min(7, *x.shape)
    window -= 1 - window % 2  # an odd window no larger than the slice
    if window < MIN_SSIM_WINDOW:
        return float("nan")
    return float(structural_similarity(x, y, data_range=1.0, win_size=window))


def voxel_similarity(a: np.ndarray, b: np.ndarray, sample: np.ndarray | None) -> dict[str, float]:
    """The voxel measures of two maps of one class (``[*S]`` each)."""
    flat_a, flat_b = a.ravel(), b.ravel()
    if sample is not None:
        flat_a, flat_b = flat_a[sample], flat_b[sample]
    return {"spearman_abs": spearman(np.abs(flat_a), np.abs(flat_b)),
            "spearman_signed": spearman(flat_a, flat_b),
            "ssim": central_slice_ssim(a, b)}


def edge_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a volume ``[*S]`` (the edge-detector control's 'explanation')."""
    image = np.asarray(image, dtype=np.float64)
    return np.sqrt(sum(ndimage.sobel(image, axis=axis) ** 2 for axis in range(image.ndim)))
