"""What every explainer shares: the model and its window, and the checks of its inputs.

All methods take the same names for the same things: ``mask`` (the clean predicted label
map, fixed under perturbation), ``aggregation`` (``sum`` | ``mean`` of the class logits
over the mask), ``seed``, ``device``, and the sliding-window settings of
:class:`~agg2exp_core.models.inference.WindowSpec` (``window=WindowSpec(...)`` or its
fields ``roi_size``, ``overlap``, ``mode``, ``sigma_scale``, ``padding_mode``, ``cval``,
``sw_batch_size``; nnU-Net's ``tile_step_size``). A ``Segmenter`` as the model brings its
own window (MONAI's or nnU-Net's) and its own baseline: ``air_value``, -1024 HU in the
model's intensity space, wherever a method removes or replaces voxels by default.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Callable

import numpy as np
import torch

from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import Window, WindowSpec
from agg2exp_core.models.nnunet_window import NnUNetWindow

AGGREGATIONS = ("sum", "mean")
WINDOW_KEYS = tuple(dict.fromkeys(f.name for spec in (WindowSpec, NnUNetWindow) for f in fields(spec)))


def split_model(model) -> tuple[Callable, Window | None]:
    """(network, its window) of a ``Segmenter``; (model, None) for a plain callable."""
    window = getattr(model, "window", None)
    if isinstance(window, Window) and hasattr(model, "network"):
        return model.network, window
    return model, None


def default_baseline(model, image: torch.Tensor) -> float:
    """The baseline of a call that names none: the model's air (-1024 HU in its input
    space) for a ``Segmenter``, 0.0 (= -1024 HU of the default [0, 1] window) otherwise."""
    air = getattr(model, "air_value", None)
    return float(air(image)) if callable(air) else 0.0


def default_range(model, image: torch.Tensor) -> tuple[float, float]:
    """(low, high) intensities of the model's input space: the model's own for a ``Segmenter``,
    [0, 1] (the default HU window) for a plain callable."""
    value_range = getattr(model, "value_range", None)
    return tuple(float(v) for v in value_range(image)) if callable(value_range) else (0.0, 1.0)


def pop_window(params: dict, default: Window | None) -> Window | None:
    """The window of a call: ``window=``, else fields given by name over ``default``, else ``default``.

    ``roi_size=None`` switches sliding windows off (whole-volume forward passes); without a
    default window, the fields make a MONAI ``WindowSpec``.
    """
    given = {k: params.pop(k) for k in WINDOW_KEYS if k in params}
    window = params.pop("window", default)
    if window is not None and not isinstance(window, Window):
        raise InputError("window", f"expected a WindowSpec or NnUNetWindow, got {type(window).__name__}")
    if not given:
        return window
    if "roi_size" in given and given["roi_size"] is None:
        return None
    if window is not None:
        return window.replace(**given)
    if given.get("roi_size") is None:
        raise InputError("roi_size", f"sliding-window settings {sorted(given)} need a roi_size")
    roi = given["roi_size"]
    given["roi_size"] = tuple(roi) if isinstance(roi, (tuple, list)) else roi
    unknown = sorted(set(given) - {f.name for f in fields(WindowSpec)})
    if unknown:
        raise InputError(unknown[0], "not a setting of MONAI's sliding window (WindowSpec)")
    return WindowSpec(**given)


def check_window(window: Window | None, image: torch.Tensor) -> Window | None:
    """A window with one size per spatial axis of the image."""
    if window is not None and len(window.roi_size) != image.dim() - 1:
        raise InputError("roi_size", f"expected {image.dim() - 1} ints, got {window.roi_size!r}")
    return window


def check_image(image) -> torch.Tensor:
    """A floating-point ``[1, X, Y, Z]`` tensor (numpy arrays are accepted and converted)."""
    if not isinstance(image, torch.Tensor):
        if not isinstance(image, np.ndarray):
            raise InputError("image", f"expected a torch.Tensor [1, X, Y, Z], got {type(image).__name__}")
        image = torch.from_numpy(image)
    if image.dim() != 4 or image.shape[0] != 1:
        raise InputError("image", f"expected shape [1, X, Y, Z] (channel first, no batch), got {list(image.shape)}")
    if not image.is_floating_point():
        raise InputError("image", f"expected a floating-point tensor, got {image.dtype}")
    return image


def check_classes(classes) -> list[int] | None:
    """Channel ids (order kept), or None for all."""
    if classes is None:
        return None
    if isinstance(classes, (torch.Tensor, np.ndarray)):
        classes = classes.tolist()
    items = [classes] if isinstance(classes, (int, np.integer)) else list(classes)
    if not items or any(not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 0 for c in items):
        raise InputError("classes", f"expected non-negative channel ids, got {classes!r}")
    return [int(c) for c in items]


def check_mask(mask, image: torch.Tensor) -> torch.Tensor:
    """An integer label map ``[*S]`` on the image's grid."""
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise InputError("mask", f"expected a label map of shape {list(image.shape[1:])}, got {list(mask.shape)}")
    if mask.is_floating_point() and not torch.equal(mask, mask.round()):
        raise InputError("mask", "expected integer class ids")
    return mask.long()


def check_aggregation(value) -> str:
    if value not in AGGREGATIONS:
        raise InputError("aggregation", f"expected 'sum' or 'mean', got {value!r}")
    return value


def check_baseline(baseline, image: torch.Tensor) -> None:
    """A scalar, or a tensor broadcastable to the image."""
    shape = tuple(torch.as_tensor(baseline).shape)
    try:
        ok = torch.broadcast_shapes(shape, tuple(image.shape)) == tuple(image.shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise InputError("baseline", f"expected a scalar or a tensor broadcastable to {list(image.shape)}, got {list(shape)}")


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(name, f"expected a positive integer, got {value!r}")
    return int(value)


def finite_number(name: str, value, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise InputError(name, f"expected a finite number{bound}, got {value!r}")
    return float(value)


def check_seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError("seed", f"expected an integer, got {value!r}")
    return int(value)


def reject_unknown(method: str, params: dict, allowed) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InputError("explain", f"unknown parameter {unknown[0]!r} for method {method!r} "
                         f"(expected: {', '.join(sorted(allowed))})")
