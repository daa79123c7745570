"""Boxes (tuples of slices) on a voxel grid: the bounding box of a mask, dilation, intersection."""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[slice, ...]


def bounding_box(mask: np.ndarray) -> Box | None:
    """Smallest box (tuple of slices) holding every ``True`` voxel; ``None`` if empty."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def dilate_box(box: Box, margin: int | Sequence[int], shape: Sequence[int]) -> Box:
    margin = (int(margin),) * len(shape) if np.isscalar(margin) else tuple(int(m) for m in margin)
    return tuple(slice(max(b.start - m, 0), min(b.stop + m, s)) for b, m, s in zip(box, margin, shape))


def intersect(a: Box, b: Box) -> Box | None:
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return None if any(s.start >= s.stop for s in out) else out


def shift(box: Box, origin: Sequence[int]) -> Box:
    return tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, origin))
