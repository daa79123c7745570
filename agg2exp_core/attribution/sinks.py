"""Where gradient attributions ``[k, *S]`` accumulate: a tensor in memory, or a .npy on disk;
and ``PadAdjoint``, which brings a window's gradient from the padded grid to the image's.

All k rows of a paper-size volume (17 classes, 300x300x250 voxels, float32: 1.5 GB) may
not fit beside the network's working memory. A ``FileSink`` accumulates into a
memory-mapped ``.npy`` (``numpy.lib.format.open_memmap``) and hands the mapped pages back
to the kernel after each batch of windows, so the resident memory of a run is bounded by
its windows, not by ``[k, *S]``; the result is a tensor backed by that file.

``open_sink`` chooses: an explicit ``out`` path streams there (and the file stays);
otherwise results larger than ``STREAM_ABOVE_BYTES`` stream to an unlinked file in
``tempfile.gettempdir()`` (``TMPDIR``; its space is freed when the tensor is released),
smaller ones stay in memory on the compute device.
"""
from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import WindowGeometry

STREAM_ABOVE_BYTES = 512 * 2**20  # results above this size stream to disk unless `out` says where

Box = tuple[slice, ...]


class MemorySink:
    """``[k, *S]`` accumulated in a tensor on the compute device."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        self.total = torch.zeros(shape, dtype=dtype, device=device)

    def add(self, row: int, box: Box, grad: torch.Tensor) -> None:
        self.total[(row, *box)] += grad

    def multiply(self, factor: torch.Tensor) -> None:
        """Every row times ``factor`` ``[*S]`` (IG's ``x - baseline``)."""
        self.total *= factor.to(self.total)

    def release(self) -> None:
        """Nothing to hand back: the tensor is the result."""

    def result(self, dtype: torch.dtype) -> torch.Tensor:
        return self.total.to(device="cpu", dtype=dtype)


class FileSink:
    """``[k, *S]`` accumulated in a memory-mapped ``.npy`` (on the CPU, in the output dtype)."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, path: Path, keep: bool):
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        try:
            self.array = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=shape)
        except OSError as err:
            raise InputError(path, f"cannot write the attribution file ({err.strerror or err})") from None
        if not keep:
            _unlink(path)  # the mapping keeps the data; the disk space goes with the last reference
        self.total = torch.from_numpy(self.array)

    def add(self, row: int, box: Box, grad: torch.Tensor) -> None:
        self.total[(row, *box)] += grad.to(device="cpu", dtype=self.total.dtype)

    def multiply(self, factor: torch.Tensor) -> None:
        factor = factor.to(device="cpu", dtype=self.total.dtype)
        for row in self.total:  # one row at a time, so that only one row's pages are resident
            row *= factor
            self.release()

    def release(self) -> None:
        """Hand the mapped pages back (the data stays in the file / page cache)."""
        handle = getattr(self.array, "_mmap", None)
        if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
            handle.madvise(mmap.MADV_DONTNEED)

    def result(self, dtype: torch.dtype) -> torch.Tensor:
        self.array.flush()
        return self.total


def open_sink(shape: tuple[int, ...], compute_dtype: torch.dtype, out_dtype: torch.dtype, device: torch.device,
              out: str | Path | None):
    """The sink of one explanation (see the module's docstring for the choice)."""
    if out is not None:
        path = Path(out)
        if path.suffix != ".npy":
            raise InputError("out", f"expected a .npy path, got {str(out)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileSink(shape, out_dtype, path, keep=True)
    nbytes = int(np.prod(shape)) * torch.empty((), dtype=out_dtype).element_size()
    if nbytes > STREAM_ABOVE_BYTES:
        handle, name = tempfile.mkstemp(prefix="agg2exp-attributions-", suffix=".npy")
        os.close(handle)
        return FileSink(shape, out_dtype, Path(name), keep=False)
    return MemorySink(shape, compute_dtype, device)


class SampleMaps:
    """Each sample's own term ``a_i ∇f̂_c(x_i)`` ``[n, k, *S]`` (float32, CPU), recorded beside the sum.

    Given to an explanation as ``sample_maps=`` (SmoothGrad): the explainer calls ``open``
    once it knows its k rows and ``add`` wherever it adds to the sum, so ``maps.sum(0)``
    is the attribution it returns. The caller bounds the memory (``n·k·voxels·4`` bytes).
    """

    def __init__(self):
        self.maps: torch.Tensor | None = None

    def open(self, n_samples: int, rows: int, shape: tuple[int, ...]) -> None:
        self.maps = torch.zeros((n_samples, rows, *shape), dtype=torch.float32)

    def add(self, sample: int, row: int, box: Box, grad: torch.Tensor) -> None:
        self.maps[(sample, row, *box)] += grad.detach().to(device="cpu", dtype=torch.float32)


def check_sample_maps(value) -> "SampleMaps | None":
    if value is not None and not isinstance(value, SampleMaps):
        raise InputError("sample_maps", f"expected an attribution.sinks.SampleMaps or None, got {type(value).__name__}")
    return value


class PadAdjoint:
    """A window's gradient on the padded grid pulled back to the image grid.

    MONAI pads a volume smaller than the window (``F.pad``); each padded voxel copies one
    image voxel (``reflect``, ``replicate``, ``circular``) or none (``constant``), axis by
    axis. So the adjoint sums a window's gradient into the image voxels it copied: per
    axis an ``index_add`` over that axis's source index map (a crop for constant padding).
    """

    def __init__(self, geometry: WindowGeometry):
        self.maps = []
        for size, before, after in zip(geometry.shape, geometry.pad_before, geometry.pad_after):
            if not (before or after):
                self.maps.append(None)  # padded coordinates are image coordinates
                continue
            source = torch.arange(size, dtype=torch.float64)[None, None]
            mode = geometry.spec.padding_mode
            padded = F.pad(source, (before, after), mode=mode, value=-1.0) if mode == "constant" \
                else F.pad(source, (before, after), mode=mode)
            self.maps.append(padded[0, 0].long())

    def __call__(self, box: tuple[slice, ...], grad: torch.Tensor) -> tuple[tuple[slice, ...], torch.Tensor]:
        """``(box on the image grid, gradient there)`` of ``grad`` on a padded-grid ``box``."""
        image_box = []
        for axis, (span, source) in enumerate(zip(box, self.maps)):
            if source is None:
                image_box.append(span)
                continue
            index = source[span]
            keep = (index >= 0).nonzero()[:, 0]
            index, low = index[keep], int(index[keep].min())
            grad = grad.index_select(axis, keep.to(grad.device))
            shape = list(grad.shape)
            shape[axis] = int(index.max()) - low + 1
            grad = grad.new_zeros(shape).index_add_(axis, (index - low).to(grad.device), grad)
            image_box.append(slice(low, low + shape[axis]))
        return tuple(image_box), grad


def check_out(out) -> str | Path | None:
    if out is not None and not isinstance(out, (str, Path)):
        raise InputError("out", f"expected a .npy path or None, got {type(out).__name__}")
    return out


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # a platform that cannot remove an open mapped file: remove it at exit
        import atexit

        atexit.register(lambda: path.unlink(missing_ok=True))
