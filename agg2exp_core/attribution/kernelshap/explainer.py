"""KernelSHAP attributions of one image: Shapley values of units and their voxel map.

Estimator (``shapley.py``): Shapley-kernel weighted least squares with the efficiency
constraint imposed exactly. All classes are explained from the same coalition
evaluations; with ``n_coalitions >= 2**M`` the values are exact Shapley values.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from agg2exp_core.attribution.kernelshap.engines import EngineStats
from agg2exp_core.attribution.kernelshap.game import build_game
from agg2exp_core.attribution.kernelshap.shapley import shapley_from_game
from agg2exp_core.attribution.kernelshap.values import coalition_values

@dataclass
class UnitAttribution:
    """Shapley values of the units of one image.

    Attributes:
        values: ``[C, M]`` one value per explained class and effective unit.
        partition: ``[*S]`` effective unit ids ``0..M-1``, ``-1`` where never perturbed.
        classes: the ``C`` class ids.
        v_full, v_empty: ``[C]`` values of the clean and the fully masked input.
        exact: every coalition was evaluated (the values are exact Shapley values).
        n_evaluations: coalitions evaluated, full and empty included.
        stats: engine accounting (patch cache hits and misses).
        seconds: wall time.
    """

    values: np.ndarray
    partition: np.ndarray
    classes: list[int]
    unit_ids: np.ndarray
    v_full: np.ndarray
    v_empty: np.ndarray
    exact: bool
    n_evaluations: int
    stats: EngineStats = field(default_factory=EngineStats)
    seconds: float = 0.0

    def voxel_map(self) -> np.ndarray:
        """``[C, *S]``: each unit's value at every voxel of the unit (0 outside units)."""
        out = np.zeros((len(self.classes), *self.partition.shape))
        inside = self.partition >= 0
        if self.values.size:
            out[:, inside] = self.values[:, self.partition[inside]]
        return out


def kernelshap_run(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None, *,
                   n_coalitions: int = 200, seed: int | None = 0, **params) -> UnitAttribution:
    """KernelSHAP of one image over units, with engine statistics (see :func:`kernelshap_explain`)."""
    start = time.perf_counter()
    game = build_game(model, image, classes, **params)
    m = game.n_units
    if game.engine is None or m == 0:
        values = np.zeros((len(game.classes), m))
        return UnitAttribution(values, game.partition, game.classes, game.unit_ids,
                               np.zeros(len(game.classes)), np.zeros(len(game.classes)), True, 0,
                               game.stats, time.perf_counter() - start)

    def evaluate(keep: np.ndarray) -> np.ndarray:
        if keep.all(axis=1).any():  # the clean coalition was evaluated while building the game
            out = np.empty((len(keep), len(game.classes)))
            full = keep.all(axis=1)
            v = coalition_values(game.clean_logits, game.classes, game.p0, game.rois, game.value, game.aggregation)
            out[full] = v.numpy()
            if (~full).any():
                out[~full] = game.values(keep[~full])
            return out
        return game.values(keep)

    phi, info = shapley_from_game(evaluate, m, n_coalitions, seed)
    return UnitAttribution(phi, game.partition, game.classes, game.unit_ids, info["v_full"], info["v_empty"],
                           info["exact"], info["n_evaluations"], game.stats, time.perf_counter() - start)


def kernelshap_units(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None,
                     **params) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit Shapley values ``[C, M]`` and the effective partition ``[*S]`` (-1: not a unit)."""
    result = kernelshap_run(model, image, classes, **params)
    return result.values, result.partition


def kernelshap_explain(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None,
                       **params) -> torch.Tensor:
    """KernelSHAP attributions as a voxel map (each unit's value on all its voxels).

    Args:
        model: a ``Segmenter`` (its network and window) or a callable
            ``[B, 1, *S] -> [B, l, *S]`` of logits (with a window: of one batch of windows).
        image: ``[1, *S]`` scaled CT (HU window mapped to [0, 1]).
        classes: channels to explain (default: all ``l``).
        partition: ``cubes``, ``semantic`` (default), ``fcc``, ``hybrid`` or an integer
            label map ``[*S]`` of units.
        value: ``logit`` (default), ``tp``, ``fp``, ``dice``, ``softdice``; ``aggregation``
            ``sum``/``mean`` for ``logit``.
        mask: the clean predicted label map ``[*S]`` (skips the clean forward pass).
        roi: bool ``[*S]`` or ``[C, *S]``; default see ``values.default_rois``; ``roi_margin``
            (voxels, default 3) dilates the predicted mask for tp/fp/dice/softdice.
        baseline: value (or ``[*S]`` array) of removed voxels; default the model's air
            (``Segmenter.air_value``: -1024 HU in its intensity space), 0.0 for a callable.
        n_coalitions: evaluations including the full and empty coalitions (default 200);
            ``>= 2**M`` gives exact Shapley values.
        seed: sampling seed (results are deterministic for a seed).
        labels: organ label map ``[*S]`` for semantic/hybrid (default: the prediction).
        spacing, n_per_axis, scale_mm, offset_mm, exclude_labels: partition parameters
            (:func:`agg2exp_core.attribution.partitions.make_partition`); a label map may use -1
            for voxels that belong to no unit.
        receptive_field: voxels (int or per axis) by which the ROI box is dilated to get the
            perturbable box; default: the exact sliding-window support, or the whole
            volume for a direct model. A direct model then only sees that crop.
        window (or roi_size, overlap, mode, sigma_scale, padding_mode, cval, sw_batch_size;
            tile_step_size for nnU-Net's): sliding-window settings over the model's own window;
            ``roi_size=None`` calls the model on the volume.
        inference: ``cached`` (default), ``roi`` (ROI-restricted, no cache) or ``full``
            (MONAI on the whole perturbed volume per coalition, the naive reference);
            ``cache_mb`` (default 1024) bounds the memoised patch logits.
        batch_size: coalitions per engine call (default 4 whole volumes for a direct
            model; 16 for a sliding-window model, whose patches are streamed).

    Returns:
        ``[len(classes) or l, *S]`` tensor in the image's dtype, on the CPU.
    """
    result = kernelshap_run(model, image, classes, **params)
    return torch.from_numpy(result.voxel_map()).to(torch.as_tensor(image).dtype)
