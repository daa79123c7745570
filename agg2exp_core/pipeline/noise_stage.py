"""Sampling noise of a SmoothGrad case: how much its matrix cells owe to the finite noise samples.

A SmoothGrad run with ``n_samples >= 2`` records each sample's attribution
(``attribution.sinks.SampleMaps``) while it explains a case, when those ``n·k·voxels``
float32 maps fit under ``SAMPLE_MAPS_MAX_BYTES``; ``aggregate.sampling_noise`` turns them
into a jackknife standard error per cell, written to ``sampling_noise`` with a normal
interval at ``SAMPLING_NOISE_LEVEL``. Larger cases skip it with a note.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from agg2exp_core.aggregate import sampling_noise
from agg2exp_core.attribution.gradients import GradientConfig
from agg2exp_core.attribution.sinks import SampleMaps
from agg2exp_core.vocabulary import FRACTION_KINDS, SAMPLING_NOISE_Z

SAMPLE_MAPS_MAX_BYTES = 512 * 2**20
Z = SAMPLING_NOISE_Z  # 95 % (vocabulary.SAMPLING_NOISE_LEVEL)


@dataclass
class CaseNoise:
    """A case's standard errors per kind ``[k, r]`` (the matrices' layout) from ``n_samples``."""

    se: dict[str, np.ndarray]
    n_samples: int
    note: str | None = None  # why there are no standard errors (memory)


def recorder_for(method: str, params: dict, n_rows: int, shape: Sequence[int],
                 limit: int = SAMPLE_MAPS_MAX_BYTES) -> tuple[SampleMaps | None, str | None]:
    """A per-sample recorder for a SmoothGrad case, or None; and a note when it is skipped for memory."""
    n = int(params.get("n_samples", GradientConfig.n_samples))
    if method != "smoothgrad" or n < 2:
        return None, None
    needed = n * n_rows * int(np.prod(shape)) * 4
    if needed > limit:
        return None, (f"sampling noise skipped: {n} samples x {n_rows} classes x {int(np.prod(shape))} voxels need "
                      f"{needed / 2**20:.0f} MiB of per-sample maps (limit {limit / 2**20:.0f} MiB)")
    return SampleMaps(), None


def case_noise(recorder: SampleMaps | None, note: str | None, pred, n_classes: int,
               rois: dict | None) -> CaseNoise | None:
    """The standard errors from a filled recorder (None without one; only the note when skipped)."""
    if note is not None:
        return CaseNoise({}, 0, note)
    if recorder is None or recorder.maps is None:
        return None
    return CaseNoise(sampling_noise(recorder.maps, pred, n_classes, rois), int(recorder.maps.shape[0]))


def noise_rows(run_id: str, case_id: str, noise: CaseNoise | None, matrices: dict[str, np.ndarray],
               target_ids: Sequence[int], source_ids: Sequence[int]) -> list[list]:
    """Long rows of ``sampling_noise``: each finite cell's SE and ``estimate ± Z·SE`` (in [0, 1] for fractions)."""
    if noise is None:
        return []
    rows = []
    for kind, se in noise.se.items():
        estimate = matrices[kind]
        for i, t in enumerate(target_ids):
            for j, s in enumerate(source_ids):
                e, v = float(estimate[i, j]), float(se[i, j])
                if np.isfinite(e) and np.isfinite(v):
                    high = min(1.0, e + Z * v) if kind in FRACTION_KINDS else e + Z * v  # a lift is unbounded
                    rows.append([run_id, case_id, int(t), int(s), kind, v, max(0.0, e - Z * v), high,
                                 noise.n_samples])
    return rows
