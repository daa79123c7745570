"""Sliding-window inference: a frozen window (MONAI's ``WindowSpec`` or nnU-Net's) and its geometry.

A ``Window`` says how a volume is tiled, padded and fused. ``WindowSpec`` holds the
settings of ``monai.inferers.sliding_window_inference`` (as MONAI's
``SlidingWindowInferer`` does); ``models.nnunet_window.NnUNetWindow`` those of nnU-Net's
predictor (tile positions from ``tile_step_size``, its Gaussian). ``window.geometry(shape)``
derives, once and in one place, what the explainers need to reproduce the fusion
exactly: the padding of volumes smaller than a window, the window grid, the importance
map of one window and the count map ``Σ_w importance_w``. The fused logit at voxel v is
then ``Σ_w imp_w[v] · y_w[v] / count[v]``, which gradients (window by window) and the
KernelSHAP patch cache (only windows touched by a perturbation) both rely on, whatever
the window's origin.

``predict_logits`` is the single clean forward pass of the core: a whole volume through
the network, directly or through the window.
"""
from __future__ import annotations

import dataclasses
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
Layout = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[Box, ...]]  # roi, before, after, slices


class Window:
    """How a volume is tiled, padded and fused; subclasses are frozen dataclasses with
    at least ``roi_size`` and ``sw_batch_size`` (windows per network call)."""

    roi_size: tuple[int, ...]
    sw_batch_size: int
    padding_mode: str = "constant"
    cval: float = 0.0

    def layout(self, shape: tuple[int, ...]) -> Layout:
        """Window size, padding before/after per axis and the windows on the padded grid."""
        raise NotImplementedError

    def importance_map(self, patch: tuple[int, ...], device, dtype: torch.dtype) -> torch.Tensor:
        """``[*patch]`` blending weights of one window."""
        raise NotImplementedError

    def infer(self, network: Callable, x: torch.Tensor) -> torch.Tensor:
        """Fused logits ``[B,l,*S]`` of a batch ``[B,1,*S]`` (float accumulation in x's dtype)."""
        return fused_logits(network, x, self.geometry(x.shape[2:]))

    def geometry(self, shape: Sequence[int]) -> "WindowGeometry":
        return WindowGeometry.build(self, tuple(int(s) for s in shape))

    def with_batch(self, sw_batch_size: int) -> "Window":
        """The same windows with another number of windows per network call."""
        return dataclasses.replace(self, sw_batch_size=sw_batch_size)

    def replace(self, **settings) -> "Window":
        """These settings over this window's; names it does not have are an ``InputError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise InputError(unknown[0], f"not a setting of {type(self).__name__} (its settings: {', '.join(sorted(names))})")
        if isinstance(settings.get("roi_size"), list):
            settings["roi_size"] = tuple(settings["roi_size"])
        return dataclasses.replace(self, **settings)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in dataclasses.asdict(self).items()}}

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class WindowSpec(Window):
    """Settings of MONAI's sliding-window inference (names and defaults as MONAI's)."""

    roi_size: tuple[int, ...]
    overlap: float | tuple[float, ...] = 0.25
    mode: str = "gaussian"
    sigma_scale: float | tuple[float, ...] = 0.125
    padding_mode: str = "constant"
    cval: float = 0.0
    sw_batch_size: int = 1

    def __post_init__(self):
        check_roi_size(self.roi_size)
        object.__setattr__(self, "roi_size", tuple(int(r) for r in self.roi_size))
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
        check_batch(self.sw_batch_size)

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

    def layout(self, shape: tuple[int, ...]) -> Layout:
        """MONAI 1.x ``sliding_window_inference``'s padding and window grid."""
        from monai.data.utils import dense_patch_slices
        from monai.utils import ensure_tuple_rep, fall_back_tuple

        roi = tuple(int(r) for r in fall_back_tuple(self.roi_size, shape))
        before, after, padded = centred_padding(shape, roi)
        overlap = ensure_tuple_rep(self.overlap, len(shape))
        # MONAI's _get_scan_interval (private there): a full-size window does not move.
        interval = tuple(r if r == p else max(int(r * (1 - o)), 1) for r, p, o in zip(roi, padded, overlap))
        slices = tuple(tuple(slice(int(s.start), int(s.stop)) for s in sl)
                       for sl in dense_patch_slices(padded, roi, interval))
        return roi, before, after, slices

    def importance_map(self, patch: tuple[int, ...], device, dtype: torch.dtype) -> torch.Tensor:
        from monai.data.utils import compute_importance_map

        return compute_importance_map(patch, mode=self.mode, sigma_scale=self.sigma_scale, device=device, dtype=dtype)


def check_roi_size(roi) -> None:
    if not isinstance(roi, (tuple, list)) or not roi or \
            not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in roi):
        raise InputError("roi_size", f"expected a tuple of ints, got {roi!r}")


def check_batch(sw_batch_size) -> None:
    if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, (int, np.integer)) or sw_batch_size < 1:
        raise InputError("sw_batch_size", f"expected a positive integer, got {sw_batch_size!r}")


def centred_padding(shape, roi) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Padding of a volume smaller than the window, split as MONAI and nnU-Net's
    ``pad_nd_image`` both split it (the odd voxel after): before, after, padded shape."""
    before = tuple(max(r - s, 0) // 2 for r, s in zip(roi, shape))
    after = tuple(max(r - s, 0) - b for r, s, b in zip(roi, shape, before))
    return before, after, tuple(max(s, r) for s, r in zip(shape, roi))


@dataclass(frozen=True)
class WindowGeometry:
    """A window's grid over one volume shape."""

    spec: Window
    shape: tuple[int, ...]            # image
    roi: tuple[int, ...]              # window size (non-positive entries fall back to the image)
    pad_before: tuple[int, ...]       # per axis: padding of a volume smaller than the window
    pad_after: tuple[int, ...]
    slices: tuple[Box, ...]           # windows on the padded grid

    @classmethod
    def build(cls, spec: Window, shape: tuple[int, ...]) -> "WindowGeometry":
        if len(spec.roi_size) != len(shape):
            raise InputError("roi_size", f"expected {len(shape)} ints for a {len(shape)}-D image, got {spec.roi_size!r}")
        roi, before, after, slices = spec.layout(shape)
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
        return self.spec.importance_map(self.roi, "cpu", torch.float64)

    def importance(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[*roi]`` blending weights of one window (the window's importance map)."""
        if dtype == torch.float64 and (device is None or torch.device(device).type == "cpu"):
            return self._importance64
        return self.spec.importance_map(self.roi, device, dtype)

    def count(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[*P]`` sum of the windows' importance maps on the padded grid."""
        importance = self.importance(device, dtype)
        count = torch.zeros(self.padded_shape, device=device, dtype=dtype)
        for s in self.slices:
            count[s] += importance
        return count

    def pad(self, x: torch.Tensor, value: float | None = None) -> torch.Tensor:
        """``[b,c,*S] -> [b,c,*P]`` as the window pads inputs smaller than itself."""
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


def predict_logits(network: Callable, image: torch.Tensor, window: Window | None = None) -> torch.Tensor:
    """Logits ``[l,*S]`` on the CPU of an image ``[1,*S]``: the one clean forward pass of the core."""
    return infer_logits(network, image[None], window)[0]


def infer_logits(network: Callable, x: torch.Tensor, window: Window | None = None) -> torch.Tensor:
    """Logits ``[B,l,*S]`` on the CPU of whole volumes ``[B,1,*S]``, without gradients.

    The input goes to the network's device and dtype (a parameter-free callable gets it
    as it is); ``window`` runs its sliding window, ``None`` calls the network on the
    whole volume.
    """
    x = x.to(model_device(network, x.device), model_dtype(network, x.dtype))
    with torch.no_grad():
        logits = window.infer(network, x) if window is not None else checked_forward(network, x, False)
    return torch.as_tensor(logits).detach().cpu()


def fused_logits(network: Callable, x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    """``Σ_w imp_w · y_w / count`` of a batch ``[B,1,*S]``, accumulated in ``x``'s dtype.

    The fusion of any window from its geometry alone (differentiable; MONAI's own
    ``sliding_window_inference`` equals it for a ``WindowSpec``, nnU-Net's predictor up to
    its float16 accumulation for an ``NnUNetWindow``).
    """
    padded = geometry.pad(x)
    importance = geometry.importance(x.device, x.dtype)
    crop = (slice(None), slice(None), *(slice(b, b + n) for b, n in zip(geometry.pad_before, geometry.shape)))
    out = []
    for sample in padded:
        total = None
        for start in range(0, len(geometry.slices), geometry.spec.sw_batch_size):
            group = geometry.slices[start:start + geometry.spec.sw_batch_size]
            y = network(torch.stack([sample[(slice(None), *s)] for s in group]))
            if total is None:
                total = x.new_zeros((y.shape[1], *geometry.padded_shape), dtype=y.dtype)
            for yi, s in zip(y, group):
                total[(slice(None), *s)] = total[(slice(None), *s)] + yi * importance.to(y.dtype)
        out.append(total / geometry.count(x.device, total.dtype))
    return torch.stack(out)[crop]


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
