"""nnU-Net v2's sliding window as a ``Window``: its tile positions, padding and Gaussian.

nnU-Net's predictor (``predict_sliding_window_return_logits``) pads a volume smaller than
the patch with ``pad_nd_image`` (constant 0, the odd voxel after), places tiles with
``_internal_get_sliding_window_slicers`` (steps from ``tile_step_size``), weights each
tile by ``compute_gaussian(patch, sigma_scale=1/8, value_scaling_factor=10)`` and divides
by the summed weights. It accumulates in float16 under ``torch.inference_mode``, so no
gradients come out of it; this window takes nnU-Net's own pieces and fuses in the
input's dtype (float32 or float64) instead, so gradients and the KernelSHAP patch cache
run on nnU-Net's geometry. nnunetv2 is imported only when a geometry is built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import Layout, Window, centred_padding, check_batch, check_roi_size


@dataclass(frozen=True)
class NnUNetWindow(Window):
    """Settings of nnU-Net v2's sliding window (``roi_size`` = the configuration's patch size)."""

    roi_size: tuple[int, ...]
    tile_step_size: float = 0.5
    sw_batch_size: int = 1
    sigma_scale: float = 0.125        # nnU-Net's 1/8
    value_scaling: float = 10.0       # nnU-Net's value_scaling_factor

    def __post_init__(self):
        check_roi_size(self.roi_size)
        object.__setattr__(self, "roi_size", tuple(int(r) for r in self.roi_size))
        step = self.tile_step_size
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or not 0 < step <= 1:
            raise InputError("tile_step_size", f"expected a number in (0, 1], got {step!r}")
        object.__setattr__(self, "tile_step_size", float(step))
        check_batch(self.sw_batch_size)

    def layout(self, shape: tuple[int, ...]) -> Layout:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        before, after, padded = centred_padding(shape, self.roi_size)
        # nnU-Net's own slicer over the padded image, called on a stand-in for its predictor
        stand_in = SimpleNamespace(configuration_manager=SimpleNamespace(patch_size=list(self.roi_size)),
                                   tile_step_size=self.tile_step_size, verbose=False)
        slicers = nnUNetPredictor._internal_get_sliding_window_slicers(stand_in, padded)
        slices = tuple(tuple(slice(int(s.start), int(s.stop)) for s in sl[1:]) for sl in slicers)
        return self.roi_size, before, after, slices

    def importance_map(self, patch: tuple[int, ...], device, dtype: torch.dtype) -> torch.Tensor:
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        # computed in float64 and cast, so float32 does not underflow at the tile's corners
        # as nnU-Net's float16 map does (its zeros are replaced by the smallest weight)
        gaussian = compute_gaussian(tuple(patch), sigma_scale=self.sigma_scale, value_scaling_factor=self.value_scaling,
                                    dtype=torch.float64, device=torch.device("cpu"))
        return gaussian.clone().to(device=device or "cpu", dtype=dtype)

    @property
    def overlap(self) -> float:
        return 1.0 - self.tile_step_size
