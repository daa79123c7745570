"""Inference engines of the KernelSHAP game: logits of perturbed inputs on the output region.

``DirectEngine`` calls the network on whole (or cropped) perturbed volumes.
``SlidingWindowEngine`` reproduces the model's sliding-window fusion (MONAI's or nnU-Net's,
from the window's geometry) exactly while running only the windows a coalition changes
(efficient-KernelSHAP paper, Sec. III-A, III-E): the baseline logits of every window that
overlaps the output region are cached, a coalition recomputes only the windows holding a
removed voxel, and cached and fresh windows are fused with the window's importance map
and normalisation, so the result equals the window's own inference on the whole
perturbed volume (``inference="full"``, the naive reference). ``with_baseline``
gives the same engine with another replacement volume (causal donors share the clean
cache); ``masked_sums`` sums the fused logits over a mask patch by patch, without fusing
(the aggregated logit of the causal effects).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from agg2exp_core.attribution.kernelshap.boxes import Box, intersect, shift
from agg2exp_core.errors import InputError
from agg2exp_core.models.devices import model_device, model_dtype
from agg2exp_core.models.inference import Window

INFERENCE = ("cached", "roi", "full")


@dataclass
class EngineStats:
    """Patch accounting of a sliding-window engine (hits: patches served from the cache)."""

    coalitions: int = 0
    patch_hits: int = 0       # patch results reused (sliding-window engine)
    patch_misses: int = 0     # patches run through the network for coalitions
    cache_patches: int = 0    # patches run once to seed the cache
    model_calls: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.patch_hits + self.patch_misses
        return self.patch_hits / total if total else 0.0


class DirectEngine:
    """Calls the model on the whole perturbed volume, or on a crop of it.

    ``crop`` (a box) restricts inference to the ROI box dilated by a receptive field: the
    model only sees the crop, which is exact when the receptive field is large enough.
    """

    def __init__(self, model: Callable, image: torch.Tensor, units: np.ndarray, baseline,
                 out_box: Box, crop: Box | None = None, batch_size: int = 4):
        self.model = model
        self.device = model_device(model)
        self.dtype = model_dtype(model)
        self.crop = crop or tuple(slice(0, s) for s in units.shape)
        self.full_shape = tuple(units.shape)
        self.x = image[0][self.crop].to(torch.float32)
        self.base = _baseline_like(baseline, image[0])[self.crop]
        self.units = torch.as_tensor(units[self.crop])
        self.out = shift(out_box, [s.start for s in self.crop])
        self.batch_size = max(int(batch_size), 1)
        self.stats = EngineStats()

    def with_baseline(self, baseline, cache_mb: float = 0.0) -> "DirectEngine":
        """The same engine (and statistics) whose removed voxels take ``baseline``'s values."""
        other = copy.copy(self)
        other.base = _baseline_like(baseline, torch.empty(self.full_shape))[self.crop]
        return other

    def logits(self, keep: np.ndarray) -> torch.Tensor:
        """Region logits ``[b, l, *r]`` (float32, CPU) for keep-masks ``[b, M]``."""
        removed = _removed_voxels(keep, self.units)                      # [b, *crop]
        x = torch.where(removed, self.base, self.x)[:, None]            # [b, 1, *crop]
        with torch.no_grad():
            y = self.model(x.to(self.device, self.dtype))
        self.stats.coalitions += len(keep)
        self.stats.model_calls += 1
        return y[(slice(None), slice(None), *self.out)].detach().float().cpu()

    def iter_logits(self, keep: np.ndarray) -> Iterator[torch.Tensor]:
        """Region logits ``[l, *r]`` of each keep-mask row, in order."""
        yield from self.logits(keep)


class SlidingWindowEngine:
    """Sliding-window inference with baseline patch caching, exact w.r.t. the window's fusion.

    The patch grid, padding and importance map are those of the window on the whole
    volume (``monai.inferers.sliding_window_inference`` for a ``WindowSpec``, nnU-Net's
    predictor for an ``NnUNetWindow``). Only the patches
    overlapping ``out_box`` are kept; their baseline contributions ``w * f(patch)`` are
    cached (``inference="cached"``) and a coalition recomputes only those containing a
    removed voxel. Beyond the paper's baseline cache, a patch's input is determined by
    which of the units touching it are kept, so recomputed patches are memoised by that
    pattern (``cache_mb`` bounds the memory): with few units per patch (organ units) most
    patterns recur. Fusion is done in float64; ``inference="full"`` runs the window itself on
    the whole perturbed volume instead (the naive reference).
    """

    def __init__(self, network: Callable, image: torch.Tensor, units: np.ndarray, baseline,
                 out_box: Box, window: Window, inference: str = "cached", batch_size: int = 4,
                 cache_mb: float = 1024.0):
        if inference not in INFERENCE:
            raise InputError("inference", f"unknown mode '{inference}' (use {', '.join(INFERENCE)})")
        self.network, self.inference, self.window = network, inference, window
        self.device, self.dtype = model_device(network), model_dtype(network)
        self.geometry = window.geometry(units.shape)
        self.batch_size = max(int(batch_size), 1)
        self.out_box = out_box
        self.stats = EngineStats()
        self.image = image[0].to(torch.float32)
        self.base = _baseline_like(baseline, image[0])
        self.units_full = torch.as_tensor(units)
        self.weight = self.geometry.importance("cpu", torch.float64)
        self.n_patches = len(self.geometry.slices)
        # -- keep the windows that overlap the output region (the only ones ever read)
        self.region = self.geometry.to_padded(out_box)
        self.patches: list[tuple[Box, Box, Box]] = []  # (window, its part in region, same in window coords)
        for index in self.geometry.windows_meeting(out_box):
            sl = self.geometry.slices[index]
            inter = intersect(sl, self.region)
            self.patches.append((sl, shift(inter, [r.start for r in self.region]),
                                 shift(inter, [s.start for s in sl])))
        self.count = torch.zeros([s.stop - s.start for s in self.region], dtype=torch.float64)
        for _, in_region, in_patch in self.patches:
            self.count[in_region] += self.weight[in_patch]
        self.x_pad = self._pad(self.image, window.cval)
        self.base_pad = self._pad(self.base, window.cval)
        self.units_pad = self._pad_units(self.units_full)
        # the units touching each patch: its input, hence its output, depends only on
        # which of them a coalition keeps
        self.touch = [np.unique(u[u >= 0].numpy()) for u in (self.units_pad[sl] for sl, _, _ in self.patches)]
        self.cache_bytes = int(cache_mb * 2**20)
        self.memo: list[dict[bytes, torch.Tensor]] = [{} for _ in self.patches]
        self.memo_used = 0
        self.clean_keys: list[bytes] = []
        self.clean_sum: torch.Tensor | None = None
        if inference == "cached":
            self._build_cache()

    # -- padding helpers (same padding as the window applies to the perturbed input)
    def _pad(self, vol: torch.Tensor, value: float) -> torch.Tensor:
        return self.geometry.pad(vol[None, None].to(torch.float64), value)[0, 0].to(vol.dtype)

    def _pad_units(self, units: torch.Tensor) -> torch.Tensor:
        # constant padding: padded voxels are never perturbed (-1); other modes mirror units
        value = -1.0 if self.window.padding_mode == "constant" else 0.0
        return self._pad(units.to(torch.float64), value).round().long()

    # -- network on patches
    def _forward(self, patches: list[torch.Tensor], index: list[int]) -> list[torch.Tensor]:
        """Weighted region parts ``(w * f(patch))[in_patch]``, float64 ``[l, *part]``.

        ``patches``: inputs ``[*roi]``; ``index``: which of ``self.patches`` each one is.
        Only the part inside the region is weighted and kept (a small contiguous copy,
        so the whole patch output can be freed).
        """
        out = []
        step = self.window.sw_batch_size
        for i in range(0, len(patches), step):
            batch = torch.stack(patches[i:i + step])[:, None]
            with torch.no_grad():
                y = self.network(batch.to(self.device, self.dtype))
            self.stats.model_calls += 1
            y = y.detach().cpu()
            for yi, p in zip(y, index[i:i + step]):
                in_patch = self.patches[p][2]
                out.append(yi[(slice(None), *in_patch)].to(torch.float64) * self.weight[in_patch])
        return out

    def _key(self, keep_row: np.ndarray, p: int) -> bytes:
        return np.packbits(keep_row[self.touch[p]]).tobytes()

    def _build_cache(self) -> None:
        """Baseline contributions of every patch overlapping the region (the cache's seed)."""
        outputs = self._forward([self.x_pad[sl] for sl, _, _ in self.patches], list(range(len(self.patches))))
        self.stats.cache_patches += len(outputs)
        l = outputs[0].shape[0] if outputs else 0
        self.clean_sum = torch.zeros((l, *self.count.shape), dtype=torch.float64)
        all_kept = np.ones(max((int(t.max()) + 1 for t in self.touch if len(t)), default=0), bool)
        for p, (part, (_, in_region, _)) in enumerate(zip(outputs, self.patches)):
            key = self._key(all_kept, p)
            self.clean_keys.append(key)
            self.memo[p][key] = part
            self.memo_used += part.numel() * part.element_size()
            self.clean_sum[(slice(None), *in_region)] += part

    def with_baseline(self, baseline, cache_mb: float = 0.0) -> "SlidingWindowEngine":
        """The same engine whose removed voxels take ``baseline``'s values (a scalar or ``[*S]``).

        Window grid, clean cache and statistics are shared (the clean input does not
        change); memoised patterns of recomputed patches are not (they depend on the
        replacement), and ``cache_mb`` bounds the new engine's own memo (default: none).
        """
        other = copy.copy(self)
        other.base = _baseline_like(baseline, self.image)
        other.base_pad = other._pad(other.base, self.window.cval)
        other.memo = [{key: memo[key]} for key, memo in zip(self.clean_keys, self.memo)] \
            if self.clean_keys else [{} for _ in self.patches]
        other.memo_used = sum(part.numel() * part.element_size() for memo in other.memo for part in memo.values())
        other.cache_bytes = other.memo_used + int(cache_mb * 2**20)
        return other

    def masked_sums(self, keep: np.ndarray, select: torch.Tensor, classes: list[int]) -> np.ndarray:
        """``Σ_v fused_c(v) · select_i(v)`` per keep row and class ``c = classes[i]``: ``[n, C]``.

        The fused logit is ``Σ_p w_p y_p / count``, so the sum is one number per patch and
        class: only patches whose kept-unit pattern differs from the clean one are run, and
        nothing is fused (``select``: ``[C, *region]``, e.g. the clean mask of each class).
        """
        if self.inference != "cached":
            raise InputError("inference", "masked sums need the patch cache (inference='cached')")
        keep = np.asarray(keep, bool)
        clean = self._clean_terms(select, classes)                     # [P, C]
        out = np.tile(clean.sum(axis=0), (len(keep), 1))
        jobs = [(j, p) for j in range(len(keep)) for p in range(len(self.patches))
                if self._key(keep[j], p) != self.clean_keys[p]]
        self.stats.coalitions += len(keep)
        self.stats.patch_misses += len(jobs)
        self.stats.patch_hits += len(keep) * len(self.patches) - len(jobs)
        for i in range(0, len(jobs), self.window.sw_batch_size):
            chunk = jobs[i:i + self.window.sw_batch_size]
            parts = self._forward([self._patch_input(keep[j], p) for j, p in chunk], [p for _, p in chunk])
            for (j, p), part in zip(chunk, parts):
                out[j] += self._terms(part, p, select, classes) - clean[p]
        return out

    def _clean_terms(self, select: torch.Tensor, classes: list[int]) -> np.ndarray:
        cached = getattr(self, "_terms_of", None)
        if cached is None or cached[0] is not select or cached[1] != classes:
            terms = np.stack([self._terms(self.memo[p][key], p, select, classes)
                              for p, key in enumerate(self.clean_keys)])
            self._terms_of = (select, list(classes), terms)
        return self._terms_of[2]

    def _terms(self, part: torch.Tensor, p: int, select: torch.Tensor, classes: list[int]) -> np.ndarray:
        """One patch's share ``Σ_v w_p y_p,c / count · select_i`` of each class's masked sum."""
        in_region = self.patches[p][1]
        weight = select[(slice(None), *in_region)].to(torch.float64) / self.count[in_region]
        return np.array([float((part[c] * weight[i]).sum()) for i, c in enumerate(classes)])

    def logits(self, keep: np.ndarray) -> torch.Tensor:
        """Region logits ``[b, l, *r]`` (float64, CPU) for keep-masks ``[b, M]``."""
        return torch.stack(list(self.iter_logits(keep)))

    def iter_logits(self, keep: np.ndarray) -> Iterator[torch.Tensor]:
        """Region logits ``[l, *r]`` of each keep-mask row, in order.

        ``cached``: a patch is recomputed only if the pattern of kept units touching it
        has not been seen (the baseline pattern is always cached); fresh results are
        memoised up to ``cache_mb``. ``roi``: every overlapping patch is recomputed.
        Patches of all rows go through the network in full ``sw_batch_size`` batches, and
        each row is fused and yielded as soon as its patches are ready, so memory holds
        one accumulator and the patches still awaited, not the whole batch.
        """
        if self.inference == "full":
            yield from self._logits_full(keep)
            return
        keep = np.asarray(keep, bool)
        n, n_patches = len(keep), len(self.patches)
        cached = self.inference == "cached"
        # job of every (row, patch): its kept-unit pattern when cached, else unique
        ids = [[(p, self._key(keep[j], p)) if cached else (p, j) for p in range(n_patches)] for j in range(n)]
        todo: dict[tuple, int] = {}  # job -> first row that needs it (insertion = row order)
        last_use: dict[tuple, int] = {}
        for j in range(n):
            for job in ids[j]:
                if cached and job[1] in self.memo[job[0]]:
                    continue
                todo.setdefault(job, j)
                last_use[job] = j
        self.stats.coalitions += n
        self.stats.patch_misses += len(todo)
        self.stats.patch_hits += n * n_patches - len(todo)
        jobs = list(todo)
        fresh: dict[tuple, torch.Tensor] = {}
        done, next_row = 0, 0
        while next_row < n:
            # rows whose jobs are all computed can be fused now
            ready = n if done >= len(jobs) else todo[jobs[done]]
            while next_row < n and next_row < ready:
                yield self._fuse(ids[next_row], fresh, cached)
                for job in ids[next_row]:
                    if last_use.get(job) == next_row:
                        fresh.pop(job, None)
                next_row += 1
            if done < len(jobs):
                chunk = jobs[done:done + self.window.sw_batch_size]
                inputs = [self._patch_input(keep[todo[job]], job[0]) for job in chunk]
                for job, part in zip(chunk, self._forward(inputs, [job[0] for job in chunk])):
                    fresh[job] = part
                    size = part.numel() * part.element_size()
                    if cached and self.memo_used + size <= self.cache_bytes:
                        self.memo[job[0]][job[1]] = part
                        self.memo_used += size
                done += len(chunk)

    def _patch_input(self, keep_row: np.ndarray, p: int) -> torch.Tensor:
        sl = self.patches[p][0]
        removed = _removed_voxels(keep_row[None], self.units_pad[sl])[0]
        return torch.where(removed, self.base_pad[sl], self.x_pad[sl])

    def _fuse(self, row_ids: list[tuple], fresh: dict, cached: bool) -> torch.Tensor:
        """The window's fusion on the region: sum of weighted patch logits over the weight sum."""
        if cached:  # the baseline sum, corrected where a patch's pattern differs
            acc = self.clean_sum.clone()
            for p, job in enumerate(row_ids):
                if job[1] != self.clean_keys[p]:
                    part = fresh[job] if job in fresh else self.memo[p][job[1]]
                    acc[(slice(None), *self.patches[p][1])] += part - self.memo[p][self.clean_keys[p]]
        else:
            acc = torch.zeros((fresh[row_ids[0]].shape[0], *self.count.shape), dtype=torch.float64)
            for p, job in enumerate(row_ids):
                acc[(slice(None), *self.patches[p][1])] += fresh[job]
        return acc / self.count

    def _logits_full(self, keep: np.ndarray) -> Iterator[torch.Tensor]:
        for i in range(0, len(keep), 2):  # whole volumes in float64: two at a time
            yield from self._logits_full_batch(keep[i:i + 2])

    def _logits_full_batch(self, keep: np.ndarray) -> torch.Tensor:
        removed = _removed_voxels(keep, self.units_full)
        x = torch.where(removed, self.base, self.image)[:, None].to(torch.float64)

        def predictor(p):
            self.stats.patch_misses += p.shape[0]
            with torch.no_grad():
                return self.network(p.to(self.device, self.dtype)).detach().cpu().to(torch.float64)

        y = self.window.infer(predictor, x)
        self.stats.coalitions += len(keep)
        self.stats.model_calls += 1
        return torch.as_tensor(y)[(slice(None), slice(None), *self.out_box)]


def _removed_voxels(keep: np.ndarray, units: torch.Tensor) -> torch.Tensor:
    """``[b, *s]`` bool: voxel belongs to a unit removed by the coalition (unit -1: never)."""
    keep = torch.as_tensor(np.asarray(keep, bool))
    table = torch.cat([keep, torch.ones((keep.shape[0], 1), dtype=torch.bool)], dim=1)  # id -1 -> last
    idx = torch.where(units >= 0, units, torch.full_like(units, keep.shape[1]))
    return ~table[:, idx]


def _baseline_like(baseline, image: torch.Tensor) -> torch.Tensor:
    base = torch.as_tensor(baseline, dtype=torch.float32)
    return base.expand(image.shape).clone() if base.dim() == 0 else base.reshape(image.shape).float()
