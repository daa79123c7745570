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

from agg2exp_core.vocabulary import SANITY_METRICS

VOXEL_METRICS = ("spearman_abs", "spearman_signed", "ssim")
ROW_METRIC = "row_spearman"
METRICS = VOXEL_METRICS + (ROW_METRIC,)
assert set(METRICS) == set(SANITY_METRICS), "the vocabulary names every metric stored"
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


def standardised_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks scaled to mean 0 and unit variance (all NaN for a constant vector): the Spearman rho
    of two vectors is the mean product of theirs, so a map is ranked once for all its comparisons."""
    ranks = stats.rankdata(np.ravel(values))
    spread = ranks.std()
    if len(ranks) < 3 or spread == 0:
        return np.full(len(ranks), np.nan)
    return (ranks - ranks.mean()) / spread


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho from two ``standardised_ranks`` vectors (NaN where either is constant)."""
    return float(np.clip(np.mean(a * b), -1.0, 1.0))


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


class RankedMap:
    """A map ``[*S]`` with the standardised ranks of its |values| and values on the voxel sample."""

    def __init__(self, values: np.ndarray, sample: np.ndarray | None):
        self.values = values
        flat = values.ravel() if sample is None else values.ravel()[sample]
        self.abs_ranks = standardised_ranks(np.abs(flat))
        self.signed_ranks = standardised_ranks(flat)


def voxel_similarity(a: RankedMap, b: RankedMap) -> dict[str, float]:
    """The voxel measures of two maps of one class."""
    return {"spearman_abs": rank_correlation(a.abs_ranks, b.abs_ranks),
            "spearman_signed": rank_correlation(a.signed_ranks, b.signed_ranks),
            "ssim": central_slice_ssim(a.values, b.values)}


def edge_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a volume ``[*S]`` (the edge-detector control's 'explanation')."""
    image = np.asarray(image, dtype=np.float64)
    return np.sqrt(sum(ndimage.sobel(image, axis=axis) ** 2 for axis in range(image.ndim)))
