"""Where a model runs: device names, the device and dtype of a model, moving it for a call."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from agg2exp_core.errors import InputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) = CUDA when available, else CPU; bad names are an ``InputError``."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError("device", f"not a torch device: {device!r}") from err
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())  # comparable with param.device
    return device


def model_device(model, default: torch.device | str = "cpu") -> torch.device:
    """Device of a model's first parameter (``default`` for parameter-free callables)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device(default)


def model_dtype(model, default: torch.dtype = torch.float32) -> torch.dtype:
    """Dtype of a model's first parameter (``default`` for parameter-free callables)."""
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration, TypeError):
        return default


@contextmanager
def placed(model, device: torch.device):
    """Run an ``nn.Module`` on ``device`` and put it back afterwards; yield its float dtype."""
    tensors = list(model.parameters()) + list(model.buffers()) if isinstance(model, torch.nn.Module) else []
    first = next((t for t in tensors if t.is_floating_point()), None)
    if first is None:
        yield None
        return
    home = first.device  # Module.to swaps data in place, so remember it before moving
    if home == device:
        yield first.dtype
        return
    model.to(device)
    try:
        yield first.dtype
    finally:
        model.to(home)
