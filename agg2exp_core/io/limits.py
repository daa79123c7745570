"""How large a scan may be, checked on its header before a single voxel is read.

A few MB of ``.nii.gz`` can declare 1200³ voxels (a decompression bomb: gigabytes once
read, more as float32, more again after resampling), and reading it kills the process
with no message. So every reader checks the header first, and the case fails with one
line naming the file while the cohort goes on. Two limits, in voxels, configurable in
the environment for sites with larger scans and machines:

- ``AGG2EXP_MAX_INPUT_VOXELS`` (default 1024³): the scan as stored;
- ``AGG2EXP_MAX_RESAMPLED_VOXELS`` (default 600³): the scan on the model's grid, estimated
  from its physical extent (voxel count times voxel volume over the target voxel volume).

A third limit is on time: ``DEFAULT_CASE_TIMEOUT_S``, the default of ``--case-timeout``.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from agg2exp_core.errors import InputError

INPUT_LIMIT_VARIABLE = "AGG2EXP_MAX_INPUT_VOXELS"
RESAMPLED_LIMIT_VARIABLE = "AGG2EXP_MAX_RESAMPLED_VOXELS"
DEFAULT_MAX_INPUT_VOXELS = 1024 ** 3
DEFAULT_MAX_RESAMPLED_VOXELS = 600 ** 3
# A case's time limit (seconds; ``--case-timeout``). A hanging read (a stale network mount) would otherwise stall the run
# forever; an hour is far beyond a full-resolution CT case explained with SmoothGrad on CPU
# (minutes), so no legitimate case is ended by default. 0 / None: no limit.
DEFAULT_CASE_TIMEOUT_S = 3600.0


def voxel_limit(variable: str, default: int) -> int:
    """A limit from the environment (a positive integer; '1e9' and '1_000' are accepted too)."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise InputError(variable, f"'{text}' is not a number of voxels") from None
    if not (math.isfinite(value) and value >= 1):
        raise InputError(variable, f"'{text}' is not a positive number of voxels")
    return int(value)


def resampled_voxels(shape: Sequence[int], affine: np.ndarray, target_spacing: Sequence[float]) -> int:
    """Voxels of a scan on a grid of ``target_spacing`` mm (its extent does not depend on orientation)."""
    spacing = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    extent_mm3 = float(np.prod(np.asarray(shape[:3], dtype=float) * spacing))
    return int(math.ceil(extent_mm3 / float(np.prod(np.asarray(target_spacing, dtype=float)))))


def check_voxels(source, shape: Sequence[int], affine: np.ndarray | None = None,
                 target_spacing: Sequence[float] | None = None) -> None:
    """Raise an ``InputError`` naming ``source`` when a header declares more voxels than allowed.

    ``shape`` is the header's (all dimensions count); with ``affine`` and ``target_spacing``
    the size after resampling to the model's spacing is checked too.
    """
    count = math.prod(int(s) for s in shape)
    limit = voxel_limit(INPUT_LIMIT_VARIABLE, DEFAULT_MAX_INPUT_VOXELS)
    dims = "x".join(str(int(s)) for s in shape)
    if count > limit:
        raise InputError(source, f"declares {dims} = {count:,} voxels, more than the limit of {limit:,} "
                                 f"(set {INPUT_LIMIT_VARIABLE} to allow more); not read")
    if affine is None or target_spacing is None or not np.isfinite(np.asarray(affine, dtype=float)).all():
        return
    resampled = resampled_voxels(shape, affine, target_spacing)
    limit = voxel_limit(RESAMPLED_LIMIT_VARIABLE, DEFAULT_MAX_RESAMPLED_VOXELS)
    if resampled > limit:
        spacing = "x".join(f"{float(s):g}" for s in target_spacing)
        raise InputError(source, f"{dims} voxels become about {resampled:,} at the model's {spacing} mm spacing, "
                                 f"more than the limit of {limit:,} (set {RESAMPLED_LIMIT_VARIABLE} to allow more); "
                                 "not read")
