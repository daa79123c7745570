"""Geometry of the phantoms: the patient frame and signed distances (mm) of simple shapes."""
from __future__ import annotations

import numpy as np


class _Frame:
    """Voxel grid plus patient pose: canonical anatomy mm <-> scanner voxels."""

    def __init__(self, shape, spacing, rot_deg, scale, shift):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, float)
        self.origin = -(np.asarray(self.shape) - 1) / 2 * self.spacing
        self.scale = np.asarray(scale, float)
        self.shift = np.asarray(shift, float)
        a = np.deg2rad(rot_deg)
        self.rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        w = np.meshgrid(*[(self.origin[i] + self.spacing[i] * np.arange(n)).astype(np.float32)
                          for i, n in enumerate(self.shape)], indexing="ij", sparse=True)
        d = [w[i] - np.float32(self.shift[i]) for i in range(3)]
        c, s = np.float32(self.rot[0, 0]), np.float32(self.rot[1, 0])
        # canonical = S^-1 R^T (world - shift); broadcast to full arrays once.
        full = np.broadcast_shapes(*(x.shape for x in w))
        self.X = np.broadcast_to((c * d[0] + s * d[1]) / np.float32(self.scale[0]), full).copy()
        self.Y = np.broadcast_to((-s * d[0] + c * d[1]) / np.float32(self.scale[1]), full).copy()
        self.Z = np.broadcast_to(d[2] / np.float32(self.scale[2]), full).copy()
        self.world = w

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag(list(self.spacing) + [1.0])
        aff[:3, 3] = self.origin
        return aff

    def box(self, lo, hi):
        """Index slices covering the canonical box [lo, hi] (None if off the grid)."""
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1)
        world = self.rot @ (corners * self.scale[:, None]) + self.shift[:, None]
        idx = (world - self.origin[:, None]) / self.spacing[:, None]
        a = np.maximum(np.floor(idx.min(1)).astype(int) - 1, 0)
        b = np.minimum(np.ceil(idx.max(1)).astype(int) + 2, self.shape)
        if np.any(b <= a):
            return None
        return tuple(slice(i, j) for i, j in zip(a, b))

    def coords(self, box):
        return self.X[box], self.Y[box], self.Z[box]


def _ellipsoid(P, c, r, rot=None):
    """Approximate signed distance (mm) to an ellipsoid, optionally rotated (local = rot @ p)."""
    d = [P[i] - np.float32(c[i]) for i in range(3)]
    if rot is not None:
        d = [rot[i, 0] * d[0] + rot[i, 1] * d[1] + rot[i, 2] * d[2] for i in range(3)]
    q = np.sqrt(sum((d[i] / np.float32(r[i])) ** 2 for i in range(3)))
    return (q - 1) * np.float32(min(r))


def _polyline(P, pts, radii):
    """Signed distance (mm) to a tube of varying radius along a polyline (union of cones)."""
    pts = np.asarray(pts, np.float32)
    radii = np.broadcast_to(np.asarray(radii, np.float32), (len(pts),))
    out = np.full(P[0].shape, np.inf, np.float32)
    for a, b, ra, rb in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
        ab = b - a
        if float(ab @ ab) < 1e-6:                       # repeated point: a sphere
            ab = np.array([1e-3, 0, 0], np.float32)
        rel = [P[i] - a[i] for i in range(3)]
        t = np.clip((rel[0] * ab[0] + rel[1] * ab[1] + rel[2] * ab[2]) / float(ab @ ab), 0, 1)
        dist = np.sqrt(sum((rel[i] - t * ab[i]) ** 2 for i in range(3)))
        np.minimum(out, dist - (ra + t * (rb - ra)), out=out)
    return out


def _bounds(pts, margin):
    pts = np.asarray(pts, float)
    return pts.min(0) - margin, pts.max(0) + margin
