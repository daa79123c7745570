"""Sliding-window inference: one frozen ``WindowSpec`` and the geometry MONAI derives from it.

``WindowSpec`` holds the settings of ``monai.inferers.sliding_window_inference`` (as
MONAI's ``SlidingWindowInferer`` does); ``WindowSpec.geometry(shape)`` derives, once and
in one place, what the explainers need to reproduce MONAI's fusion exactly: the padding
of volumes smaller than a window, the window grid, the importance map of one window and
the count map ``Σ_w importance_w``. The fused logit at voxel v is then
``Σ_w imp_w[v] · y_w[v] / count[v]``, which gradients (window by window) and the
KernelSHAP patch cache (only windows touched by a perturbation) both rely on.

``predict_logits`` is the single clean forward pass of the core: a whole volume through
the network, directly or through MONAI's sliding window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from agg2exp_core.errors import InputError
from agg2exp_core.models.devices import model_device, model_dtype

BLEND_MODES = ("gaussian", "constant")
PAD_MODES = ("constant", "reflect", "replicate", "circular")

Box = tuple[slice, ...]


@dataclass(frozen=True)
class WindowSpec:
    """Settings of MONAI's sliding-window inference (names and defaults as MONAI's)."""

    roi_size: tuple[int, ...]
    overlap: float | tuple[float, ...] = 0.25
    mode: str = "gaussian"
    sigma_scale: float | tuple[float, ...] = 0.125
    padding_mode: str = "constant"
    cval: float = 0.0
    sw_batch_size: int = 1

    def __post_init__(self):
        roi = self.roi_size
        if not isinstance(roi, (tuple, list)) or not roi or \
                not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in roi):
            raise InputError("roi_size", f"expected a tuple of ints, got {roi!r}")
        object.__setattr__(self, "roi_size", tuple(int(r) for r in roi))
        overlaps = self.overlap if isinstance(self.overlap, (tuple, list)) else (self.overlap,)
        if not all(_is_number(o) and 0 <= o < 1 for o in overlaps):
            raise InputError("overlap", f"expected values in [0, 1), got {self.overlap!r}")
        if self.mode not in BLEND_MODES:
            raise InputError("mode", f"expected one of {', '.join(BLEND_MODES)}, got {self.mode!r}")
        if self.padding_mode not in PAD_MODES:
            raise InputError("padding_mode", f"expected one of {', '.join(PAD_MODES)}, got {self.padding_mode!r}")
        sigmas = self.sigma_scale if isinstance(self.sigma_scale, (tuple, list)) else (self.sigma_scale,)
        if not all(_is_number(s) and s >= 0 for s in sigmas):  # MONAI also takes one per dim
            raise InputError("sigma_scale", f"expected finite numbers >= 0, got {self.sigma_scale!r}")
        if not _is_number(self.cval):
            raise InputError("cval", f"expected a finite number, got {self.cval!r}")
        object.__setattr__(self, "cval", float(self.cval))
        if isinstance(self.sw_batch_size, bool) or not isinstance(self.sw_batch_size, (int, np.integer)) \
                or self.sw_batch_size < 1:
            raise InputError("sw_batch_size", f"expected a positive integer, got {self.sw_batch_size!r}")

    def with_batch(self, sw_batch_size: int) -> "WindowSpec":
        """The same windows with another number of windows per network call."""
        return WindowSpec(self.roi_size, self.overlap, self.mode, self.sigma_scale, self.padding_mode,
                          self.cval, sw_batch_size)

    def to_dict(self) -> dict:
        return {"roi_size": list(self.roi_size), "overlap": self.overlap, "mode": self.mode,
                "sigma_scale": self.sigma_scale, "padding_mode": self.padding_mode, "cval": self.cval,
                "sw_batch_size": self.sw_batch_size}

    def infer(self, network: Callable, x: torch.Tensor) -> torch.Tensor:
        """``monai.inferers.sliding_window_inference`` of a batch ``[B,1,*S]`` with these settings."""
        from monai.inferers import sliding_window_inference

        return torch.as_tensor(sliding_window_inference(
            x, self.roi_size, self.sw_batch_size, network, overlap=self.overlap, mode=self.mode,
            sigma_scale=self.sigma_scale, padding_mode=self.padding_mode, cval=self.cval))

    def geometry(self, shape: Sequence[int]) -> "WindowGeometry":
        return WindowGeometry.build(self, tuple(int(s) for s in shape))


@dataclass(frozen=True)
class WindowGeometry:
    """MONAI's window grid over one volume shape (MONAI 1.x ``sliding_window_inference``)."""

    spec: WindowSpec
    shape: tuple[int, ...]            # image
    roi: tuple[int, ...]              # window size (non-positive entries fall back to the image)
    pad_before: tuple[int, ...]       # per axis: padding of a volume smaller than the window
    pad_after: tuple[int, ...]
    slices: tuple[Box, ...]           # windows on the padded grid

    @classmethod
    def build(cls, spec: WindowSpec, shape: tuple[int, ...]) -> "WindowGeometry":
        from monai.data.utils import dense_patch_slices
        from monai.utils import ensure_tuple_rep, fall_back_tuple

        if len(spec.roi_size) != len(shape):
            raise InputError("roi_size", f"expected {len(shape)} ints for a {len(shape)}-D image, got {spec.roi_size!r}")
        roi = tuple(int(r) for r in fall_back_tuple(spec.roi_size, shape))
        before = tuple(max(r - s, 0) // 2 for r, s in zip(roi, shape))
        after = tuple(max(r - s, 0) - b for r, s, b in zip(roi, shape, before))
        padded = tuple(max(s, r) for s, r in zip(shape, roi))
        overlap = ensure_tuple_rep(spec.overlap, len(shape))
        # MONAI's _get_scan_interval (private there): a full-size window does not move.
        interval = tuple(r if r == p else max(int(r * (1 - o)), 1) for r, p, o in zip(roi, padded, overlap))
        slices = tuple(tuple(slice(int(s.start), int(s.stop)) for s in sl)
                       for sl in dense_patch_slices(padded, roi, interval))
        return cls(spec, shape, roi, before, after, slices)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(s + a + b for s, a, b in zip(self.shape, self.pad_before, self.pad_after))

    @property
    def torch_pad(self) -> list[int]:
        """``F.pad`` widths, last spatial axis first (as MONAI pads)."""
        return [p for b, a in zip(reversed(self.pad_before), reversed(self.pad_after)) for p in (b, a)]

    @cached_property
    def _importance64(self) -> torch.Tensor:
        from monai.data.utils import compute_importance_map, get_valid_patch_size

        patch = tuple(get_valid_patch_size(self.padded_shape, self.roi))
        return compute_importance_map(patch, mode=self.spec.mode, sigma_scale=self.spec.sigma_scale,
                                      device="cpu", dtype=torch.float64)

    def importance(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[*roi]`` blending weights of one window (MONAI's importance map)."""
        from monai.data.utils import compute_importance_map, get_valid_patch_size

        if dtype == torch.float64 and (device is None or torch.device(device).type == "cpu"):
            return self._importance64
        patch = tuple(get_valid_patch_size(self.padded_shape, self.roi))
        return compute_importance_map(patch, mode=self.spec.mode, sigma_scale=self.spec.sigma_scale,
                                      device=device, dtype=dtype)

    def count(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[*P]`` sum of the windows' importance maps on the padded grid."""
        importance = self.importance(device, dtype)
        count = torch.zeros(self.padded_shape, device=device, dtype=dtype)
        for s in self.slices:
            count[s] += importance
        return count

    def pad(self, x: torch.Tensor, value: float | None = None) -> torch.Tensor:
        """``[b,c,*S] -> [b,c,*P]`` as MONAI pads inputs smaller than the window."""
        if not any(self.torch_pad):
            return x
        if self.spec.padding_mode != "constant":
            return F.pad(x, self.torch_pad, mode=self.spec.padding_mode)
        return F.pad(x, self.torch_pad, mode="constant", value=self.spec.cval if value is None else value)

    def to_padded(self, box: Box) -> Box:
        """A box on the image grid as a box on the padded grid."""
        return tuple(slice(s.start + b, s.stop + b) for s, b in zip(box, self.pad_before))

    def windows_meeting(self, box: Box) -> list[int]:
        """Indices of the windows that overlap a box of the image grid."""
        target = self.to_padded(box)
        return [i for i, sl in enumerate(self.slices)
                if all(max(a.start, b.start) < min(a.stop, b.stop) for a, b in zip(sl, target))]

    def support(self, box: Box) -> Box:
        """Union of the windows overlapping ``box``, on the image grid (clipped to it): the
        voxels whose values can change the fused output inside ``box``."""
        hits = [self.slices[i] for i in self.windows_meeting(box)]
        union = [slice(min(h[a].start for h in hits), max(h[a].stop for h in hits)) for a in range(len(self.shape))]
        return tuple(slice(max(u.start - b, 0), min(u.stop - b, s))
                     for u, b, s in zip(union, self.pad_before, self.shape))


def predict_logits(network: Callable, image: torch.Tensor, window: WindowSpec | None = None) -> torch.Tensor:
    """Logits ``[l,*S]`` on the CPU of an image ``[1,*S]``: the one clean forward pass of the core."""
    return infer_logits(network, image[None], window)[0]


def infer_logits(network: Callable, x: torch.Tensor, window: WindowSpec | None = None) -> torch.Tensor:
    """Logits ``[B,l,*S]`` on the CPU of whole volumes ``[B,1,*S]``, without gradients.

    The input goes to the network's device and dtype (a parameter-free callable gets it
    as it is); ``window`` runs MONAI's sliding window, ``None`` calls the network on the
    whole volume.
    """
    x = x.to(model_device(network, x.device), model_dtype(network, x.dtype))
    with torch.no_grad():
        logits = window.infer(network, x) if window is not None else checked_forward(network, x, False)
    return torch.as_tensor(logits).detach().cpu()


def checked_forward(network: Callable, inputs: torch.Tensor, differentiable: bool = True) -> torch.Tensor:
    """Logits of a batch, checked to be ``[b, l, *S]`` (and differentiable in the input)."""
    logits = network(inputs)
    if not isinstance(logits, torch.Tensor) or logits.dim() != inputs.dim() \
            or logits.shape[0] != inputs.shape[0] or logits.shape[2:] != inputs.shape[2:]:
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError("model", f"expected logits [B, l, *S] = [{inputs.shape[0]}, l, "
                         f"{', '.join(map(str, inputs.shape[2:]))}], got {got}")
    if differentiable and not logits.requires_grad:
        raise InputError("model", "its output does not depend differentiably on the input")
    return logits


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
