"""Texture, pathology (pleural effusion, consolidation) and the scanner (blur, noise, kernel)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from agg2exp_core.io.phantoms.anatomy import HU, LABEL, _Painter


def _smooth_noise(rng, shape, sigma_vox, std=1.0):
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return n * np.float32(std / max(float(n.std()), 1e-6))


def _textures(p: _Painter, rng, lung):
    """Soft-tissue heterogeneity and lung vessels, so intensities are not piecewise flat."""
    hu, sp = p.hu, p.f.spacing
    soft = (hu > -200) & (hu < 200)
    hu += np.where(soft, _smooth_noise(rng, hu.shape, 4.0 / sp, 8.0), 0)
    # Lung vessels: bright branching specks, denser and thicker toward the hila.
    hilum = np.sqrt((np.abs(p.f.X) - 55) ** 2 + (p.f.Y + 5) ** 2 + ((p.f.Z + 10) / 1.5) ** 2)
    near = np.exp(-hilum / 70.0)
    field = _smooth_noise(rng, hu.shape, 2.0 / sp)
    vessel = lung & (field > 1.7 - 1.0 * near)
    hu[vessel] += (280 + 380 * near[vessel])


def _effusion(p: _Painter, rng, frac, side: int | None = None):
    """Pleural fluid layering posteriorly and at the base of one pleural space (``side`` 0 left,
    1 right; None: drawn)."""
    lab = p.lab
    side = rng.integers(2) if side is None else side
    ids = (LABEL["lung_upper_lobe_left"], LABEL["lung_lower_lobe_left"]) if side == 0 else \
        (LABEL["lung_upper_lobe_right"], LABEL["lung_middle_lobe_right"], LABEL["lung_lower_lobe_right"])
    lung = np.isin(lab, ids)
    score = p.f.Y + 1.0 * p.f.Z                            # low = dependent (posterior, inferior)
    thr = np.quantile(score[lung], frac)
    fluid = lung & (score <= thr)
    band = lung & (score > thr) & (score <= thr + 10)       # compressive atelectasis above it
    p.hu[band] += 260
    p.hu[fluid] = HU["fluid"]
    lab[fluid] = 0
    return fluid


def _consolidation(p: _Painter, rng):
    """A blob of airless lung inside one lobe (it keeps the lobe's label)."""
    lobes = ["lung_lower_lobe_left", "lung_lower_lobe_right", "lung_upper_lobe_left",
             "lung_upper_lobe_right", "lung_middle_lobe_right"]
    name = lobes[rng.choice(5, p=[0.28, 0.28, 0.16, 0.16, 0.12])]
    lobe = p.lab == LABEL[name]
    depth = ndimage.distance_transform_edt(lobe, sampling=p.f.spacing)
    cand = np.argwhere(depth >= min(12.0, depth.max() * 0.6))
    c = cand[rng.integers(len(cand))]
    world = [p.f.world[i].reshape(-1) for i in range(3)]
    cw = [world[i][c[i]] for i in range(3)]
    r = rng.uniform(40, 60, 3)  # lobar-sized: large enough to change the model's behaviour
    W = np.meshgrid(*world, indexing="ij", sparse=True)
    q = sum(((W[i] - cw[i]) / r[i]) ** 2 for i in range(3))
    wobble = _smooth_noise(rng, p.lab.shape, 8.0 / p.f.spacing, 0.25)
    blob = lobe & (q + wobble < 1.0)
    if blob.sum() < 8:                                      # tiny lobe: take its core instead
        blob = lobe & (depth >= np.quantile(depth[lobe], 0.7))
    p.hu[blob] = rng.uniform(-40, 30) + _smooth_noise(rng, p.lab.shape, 1.0, 15.0)[blob]
    return blob


def _scanner(hu, rng, spacing, kernel):
    """Blur then noise; the sharp kernel adds edge enhancement and finer, stronger noise."""
    sp = np.asarray(spacing)
    if kernel == "standard":
        out = ndimage.gaussian_filter(hu, 3.0 / sp)
        out += _smooth_noise(rng, hu.shape, 0.7, 18.0)
    else:
        out = ndimage.gaussian_filter(hu, 2.5 / sp)
        out += 0.25 * (out - ndimage.gaussian_filter(out, 3.0 / sp))  # edge enhancement
        white = rng.standard_normal(hu.shape).astype(np.float32)
        white -= 0.5 * ndimage.gaussian_filter(white, 1.0)              # high-pass texture
        out += white * np.float32(42.0 / white.std())
    return np.clip(out, -1024, 3071).astype(np.float32)
