"""KernelSHAP over supervoxels for 3D segmentation, with ROI restriction and patch caching.

The explained game (efficient-KernelSHAP paper, Sec. III): players are the units of a
partition (``partitions.py``); a coalition ``m in {0,1}^M`` keeps the units with
``m_j = 1`` and sets every voxel of a removed unit to ``baseline`` (default ``0.0``, the
scaled value of -1024 HU, i.e. air). A value function turns the model's logits on the
perturbed image into one number per explained class:

- ``logit`` (default, Agg2Exp Eq. 2): ``sum_{x in R, P0(x)=c} z_c(x)``, the class-c logit
  summed over the voxels predicted ``c`` on the clean image (``reduce="mean"`` divides by
  their count). ``R`` defaults to the whole volume.
- ``tp`` / ``fp`` / ``dice`` / ``softdice``: Eqs. 3-6 of the efficient-KernelSHAP paper,
  restricted to an ROI ``R``; default ``R`` = the class's clean predicted mask dilated by
  ``roi_margin`` voxels (Chebyshev), so that new false positives next to the object count
  (with ``R = P0`` exactly, FP would be identically 0).

Estimator: Shapley-kernel weighted least squares with the efficiency constraint imposed
exactly (``sum_j phi_j = v(1) - v(0)``). Coalition sizes whose complete enumeration fits
the budget are enumerated (smallest/largest sizes first, as in ``shap.KernelExplainer``);
the remaining sizes are sampled in antithetic pairs (a coalition and its complement). With
``n_coalitions >= 2**M`` every coalition is enumerated and the values are exact Shapley
values. All classes are explained from the same coalition evaluations.

Speed (paper Sec. III-A, III-E): only the ROI's bounding box is read, only voxels within
its receptive-field support are perturbed (units outside are null players, value 0), and
for a sliding-window model (``roi_size`` given) the baseline logits of every patch that
overlaps the ROI box are cached; a coalition recomputes only the patches containing a
removed voxel and fuses cached and fresh patches with MONAI's importance map and
normalisation, so the result equals ``monai.inferers.sliding_window_inference`` on the
whole perturbed volume (``inference="full"``, the naive reference).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from math import comb
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from agg2exp_core.errors import InputError
from agg2exp_core.partitions import make_partition, relabel

VALUES = ("logit", "tp", "fp", "dice", "softdice")
INFERENCE = ("cached", "roi", "full")
DICE_EPS = 1e-6

Box = tuple[slice, ...]


# ============================================================ coalitions and solver
def kernel_size_weights(n_units: int) -> np.ndarray:
    """Shapley-kernel mass of each coalition size ``k = 0..M`` (0 at the ends), summing to 1.

    A single coalition of size ``k`` has weight ``(M-1) / (C(M,k) k (M-k))``; summed over
    the ``C(M,k)`` coalitions of that size this gives ``(M-1) / (k (M-k))``.
    """
    m = n_units
    w = np.zeros(m + 1)
    if m < 2:
        return w
    k = np.arange(1, m)
    w[1:m] = (m - 1) / (k * (m - k))
    return w / w.sum()


def sample_coalitions(n_units: int, n_coalitions: int, seed: int | np.random.Generator | None = 0,
                      max_draw_factor: int = 20) -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalitions of the middle sizes ``1..M-1`` and their regression weights.

    The budget ``n_coalitions`` counts every evaluation, the full and empty coalitions
    included, so ``n_coalitions - 2`` middle coalitions are drawn. Size pairs ``(k, M-k)``
    are enumerated completely, from the smallest ``k`` up, while they fit the budget; the
    rest are sampled in complementary pairs (size ``k ~ (M-1)/(k(M-k))``, then a uniform
    subset), duplicates merged into weights.

    Returns:
        masks: bool ``[n, M]``, ``True`` = unit kept.
        weights: float ``[n]``, summing to 1 over the middle sizes.
        exact: ``True`` when all ``2**M - 2`` middle coalitions are enumerated.
    """
    m = int(n_units)
    rng = np.random.default_rng(seed)
    size_w = kernel_size_weights(m)
    budget = max(int(n_coalitions) - 2, 0)
    rows: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    remaining = list(range(1, m))
    for k in range(1, m // 2 + 1):
        sizes = sorted({k, m - k})
        count = sum(comb(m, s) for s in sizes)
        if m < 2 or count > budget:
            break
        for s in sizes:
            subsets = _all_subsets(m, s)
            rows.append(subsets)
            weights.append(np.full(len(subsets), size_w[s] / comb(m, s)))
            remaining.remove(s)
        budget -= count
    exact = not remaining
    if remaining and budget >= 2:
        masks, w = _sample_pairs(m, remaining, size_w, budget, rng, max_draw_factor)
        rows.append(masks)
        weights.append(w)
    if not rows:
        return np.zeros((0, m), bool), np.zeros(0), exact or m < 2
    return np.concatenate(rows), np.concatenate(weights), exact


def _all_subsets(m: int, size: int) -> np.ndarray:
    """All ``C(m, size)`` keep-masks with exactly ``size`` units kept, ``[C, m]`` bool."""
    from itertools import combinations
    out = np.zeros((comb(m, size), m), bool)
    for i, idx in enumerate(combinations(range(m), size)):
        out[i, list(idx)] = True
    return out


def _sample_pairs(m: int, sizes: list[int], size_w: np.ndarray, budget: int,
                  rng: np.random.Generator, max_draw_factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Antithetic samples of the remaining sizes; weight = their mass * draw frequency."""
    p = size_w[sizes] / size_w[sizes].sum()
    mass = size_w[sizes].sum()
    counts: dict[bytes, list] = {}
    draws = 0
    target = budget - budget % 2
    chunk = max(target // 2, 1)
    while len(counts) < target and draws < max_draw_factor * max(target, 2):
        k = rng.choice(sizes, size=chunk, p=p)
        ranks = rng.random((chunk, m)).argsort(axis=1).argsort(axis=1)
        masks = ranks < k[:, None]
        for mask in masks:
            for row in (mask, ~mask):  # a coalition and its complement
                key = np.packbits(row).tobytes()
                if key in counts:
                    counts[key][1] += 1
                elif len(counts) < target:
                    counts[key] = [row.copy(), 1]
                else:
                    continue
            draws += 2
            if len(counts) >= target:
                break
    rows = np.array([v[0] for v in counts.values()], bool).reshape(-1, m)
    freq = np.array([v[1] for v in counts.values()], float)
    return rows, mass * freq / freq.sum()


def solve_kernel_shap(masks: np.ndarray, weights: np.ndarray, values: np.ndarray,
                      v_empty: np.ndarray, v_full: np.ndarray) -> np.ndarray:
    """Weighted least squares for Shapley values under the exact efficiency constraint.

    Minimises ``sum_i w_i (v(z_i) - v(0) - phi^T z_i)^2`` subject to
    ``1^T phi = v(1) - v(0)``, by eliminating the last unit.

    Args:
        masks: ``[n, M]`` keep-masks of the middle coalitions.
        weights: ``[n]`` kernel weights.
        values: ``[n, C]`` value of each coalition per class.
        v_empty, v_full: ``[C]`` values of the empty and full coalitions.

    Returns:
        ``[C, M]`` Shapley values.
    """
    v_empty = np.atleast_1d(np.asarray(v_empty, float))
    delta = np.atleast_1d(np.asarray(v_full, float)) - v_empty
    m = masks.shape[1]
    if m == 0:
        return np.zeros((len(delta), 0))
    if m == 1:
        return delta[:, None].copy()
    if len(masks) == 0:  # no information beyond efficiency: split it evenly
        return np.repeat(delta[:, None] / m, m, axis=1)
    z = masks.astype(float)
    y = np.asarray(values, float) - v_empty[None, :] - z[:, -1:] * delta[None, :]
    x = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(np.asarray(weights, float))[:, None]
    head, *_ = np.linalg.lstsq(x * sw, y * sw, rcond=None)  # [M-1, C]
    last = delta - head.sum(axis=0)
    return np.concatenate([head, last[None, :]], axis=0).T


# ============================================================ value functions
def coalition_values(logits: torch.Tensor, classes: Sequence[int], p0: torch.Tensor,
                     rois: torch.Tensor, value: str = "logit", reduce: str = "sum") -> torch.Tensor:
    """Value of each (coalition, class) from logits on the output region.

    Args:
        logits: ``[B, l, *r]`` logits of perturbed inputs on the output region.
        classes: the ``C`` explained class ids (channels).
        p0: ``[*r]`` int clean (unperturbed) argmax prediction on the region.
        rois: ``[C, *r]`` bool ROI per class.
        value: ``logit``, ``tp``, ``fp``, ``dice`` or ``softdice``.
        reduce: for ``logit``: ``sum`` (Agg2Exp) or ``mean`` over the voxels summed.

    Returns:
        ``[B, C]`` float64 values.
    """
    logits = logits.to(torch.float64)
    b = logits.shape[0]
    flat = logits.reshape(b, logits.shape[1], -1)
    p0 = p0.reshape(-1)
    rois = rois.reshape(len(classes), -1)
    pm = flat.argmax(dim=1) if value != "logit" else None  # [B, V]
    out = torch.zeros((b, len(classes)), dtype=torch.float64)
    for i, c in enumerate(classes):
        r = rois[i]
        base = (p0 == c) & r           # baseline mask inside the ROI
        z = flat[:, c]                 # [B, V] target logit
        n_roi = max(int(r.sum()), 1)
        if value == "logit":
            total = (z * base).sum(dim=1)
            out[:, i] = total / max(int(base.sum()), 1) if reduce == "mean" else total
            continue
        pos = (pm == c) & r            # perturbed prediction inside the ROI
        if value == "tp":
            out[:, i] = (z * (pos & base)).sum(dim=1) / n_roi
        elif value == "fp":
            out[:, i] = -(z * (pos & ~base)).sum(dim=1) / n_roi
        elif value == "dice":
            inter = (pos & base).sum(dim=1).to(torch.float64)
            out[:, i] = 2 * inter / (pos.sum(dim=1) + base.sum() + DICE_EPS)
        elif value == "softdice":
            sign = base.to(torch.float64) * 2 - 1
            out[:, i] = (z * pos * sign).sum(dim=1) / n_roi
        else:
            raise InputError("value", f"unknown value function '{value}' (use {', '.join(VALUES)})")
    return out


def default_rois(prediction: np.ndarray, classes: Sequence[int], value: str,
                 roi: np.ndarray | None = None, roi_margin: int = 3) -> np.ndarray:
    """ROI per class ``[C, *S]`` bool (see module docstring for the defaults).

    ``roi`` may be one mask ``[*S]`` shared by all classes or one per class ``[C, *S]``.
    """
    shape = prediction.shape
    if roi is not None:
        roi = np.asarray(roi).astype(bool)
        if roi.shape == shape:
            return np.broadcast_to(roi, (len(classes), *shape)).copy()
        if roi.shape == (len(classes), *shape):
            return roi
        raise InputError("roi", f"shape {roi.shape} is neither {shape} nor {(len(classes), *shape)}")
    if value == "logit":
        return np.ones((len(classes), *shape), bool)
    size = 2 * int(roi_margin) + 1
    return np.stack([ndimage.maximum_filter(prediction == c, size=size) if roi_margin > 0 else prediction == c
                     for c in classes])


# ============================================================ boxes
def bounding_box(mask: np.ndarray) -> Box | None:
    """Smallest box (tuple of slices) holding every ``True`` voxel; ``None`` if empty."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def dilate_box(box: Box, margin: int | Sequence[int], shape: Sequence[int]) -> Box:
    margin = (int(margin),) * len(shape) if np.isscalar(margin) else tuple(int(m) for m in margin)
    return tuple(slice(max(b.start - m, 0), min(b.stop + m, s)) for b, m, s in zip(box, margin, shape))


def _intersect(a: Box, b: Box) -> Box | None:
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return None if any(s.start >= s.stop for s in out) else out


def _shift(box: Box, origin: Sequence[int]) -> Box:
    return tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, origin))


def _box_union(boxes: Sequence[Box]) -> Box:
    return tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(len(boxes[0])))


# ============================================================ inference engines
def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _model_dtype(model) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration, TypeError):
        return torch.float32


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
        self.device = _model_device(model)
        self.dtype = _model_dtype(model)
        self.crop = crop or tuple(slice(0, s) for s in units.shape)
        self.x = image[0][self.crop].to(torch.float32)
        self.base = _baseline_like(baseline, image[0])[self.crop]
        self.units = torch.as_tensor(units[self.crop])
        self.out = _shift(out_box, [s.start for s in self.crop])
        self.batch_size = max(int(batch_size), 1)
        self.stats = EngineStats()

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
    """Sliding-window inference with baseline patch caching, exact w.r.t. MONAI's fusion.

    The patch grid, padding and importance map are those of
    ``monai.inferers.sliding_window_inference`` on the whole volume. Only the patches
    overlapping ``out_box`` are kept; their baseline contributions ``w * f(patch)`` are
    cached (``inference="cached"``) and a coalition recomputes only those containing a
    removed voxel. Beyond the paper's baseline cache, a patch's input is determined by
    which of the units touching it are kept, so recomputed patches are memoised by that
    pattern (``cache_mb`` bounds the memory): with few units per patch (organ units) most
    patterns recur. Fusion is done in float64; ``inference="full"`` runs MONAI itself on
    the whole perturbed volume instead (the naive reference).
    """

    def __init__(self, network: Callable, image: torch.Tensor, units: np.ndarray, baseline,
                 out_box: Box, roi_size, overlap=0.25, mode: str = "gaussian", sigma_scale=0.125,
                 padding_mode: str = "constant", cval: float = 0.0, sw_batch_size: int = 4,
                 inference: str = "cached", batch_size: int = 4, cache_mb: float = 1024.0):
        from monai.data.utils import compute_importance_map, dense_patch_slices, get_valid_patch_size
        from monai.utils import ensure_tuple_rep, fall_back_tuple

        if inference not in INFERENCE:
            raise InputError("inference", f"unknown mode '{inference}' (use {', '.join(INFERENCE)})")
        self.network, self.inference = network, inference
        self.device, self.dtype = _model_device(network), _model_dtype(network)
        shape = tuple(units.shape)
        nd = len(shape)
        self.shape = shape
        self.roi_size = fall_back_tuple(roi_size, shape)
        self.overlap = ensure_tuple_rep(overlap, nd)
        self.mode, self.sigma_scale = mode, sigma_scale
        self.padding_mode, self.cval = padding_mode, cval
        self.sw_batch_size = max(int(sw_batch_size), 1)
        self.batch_size = max(int(batch_size), 1)
        self.out_box = out_box
        self.stats = EngineStats()
        self.image = image[0].to(torch.float32)
        self.base = _baseline_like(baseline, image[0])
        self.units_full = torch.as_tensor(units)
        # -- MONAI's padding (when the volume is smaller than a patch) and patch grid
        self.pad_before = [max(r - s, 0) // 2 for r, s in zip(self.roi_size, shape)]
        pad_after = [max(r - s, 0) - b for r, s, b in zip(self.roi_size, shape, self.pad_before)]
        self.pad = [p for b, a in zip(reversed(self.pad_before), reversed(pad_after)) for p in (b, a)]
        padded = tuple(max(s, r) for s, r in zip(shape, self.roi_size))
        interval = _scan_interval(padded, self.roi_size, self.overlap)
        slices = [tuple(slice(int(s.start), int(s.stop)) for s in sl)
                  for sl in dense_patch_slices(padded, self.roi_size, interval)]
        patch = get_valid_patch_size(padded, self.roi_size)
        self.weight = compute_importance_map(tuple(patch), mode=mode, sigma_scale=sigma_scale,
                                             device="cpu", dtype=torch.float64)
        self.n_patches = len(slices)
        # -- keep the patches that overlap the output region (the only ones ever read)
        out_pad = _shift(out_box, [-b for b in self.pad_before])
        self.region = out_pad
        self.patches: list[tuple[Box, Box, Box]] = []  # (patch, its part in region, same in patch coords)
        for sl in slices:
            inter = _intersect(sl, out_pad)
            if inter is not None:
                self.patches.append((sl, _shift(inter, [r.start for r in out_pad]),
                                     _shift(inter, [s.start for s in sl])))
        region_shape = [s.stop - s.start for s in out_pad]
        self.count = torch.zeros(region_shape, dtype=torch.float64)
        for _, in_region, in_patch in self.patches:
            self.count[in_region] += self.weight[in_patch]
        self.x_pad = self._pad(self.image, self.cval)
        self.base_pad = self._pad(self.base, self.cval)
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

    # -- padding helpers (same padding as MONAI applies to the perturbed input)
    def _pad(self, vol: torch.Tensor, value: float) -> torch.Tensor:
        if not any(self.pad):
            return vol
        mode = "constant" if self.padding_mode == "constant" else self.padding_mode
        v = vol[None, None].to(torch.float64)
        out = F.pad(v, self.pad, mode=mode, value=value) if mode == "constant" else F.pad(v, self.pad, mode=mode)
        return out[0, 0].to(vol.dtype)

    def _pad_units(self, units: torch.Tensor) -> torch.Tensor:
        # constant padding: padded voxels are never perturbed; other modes mirror units
        if self.padding_mode == "constant":
            return self._pad(units.to(torch.float64), -1.0).round().long()
        return self._pad(units.to(torch.float64), 0.0).round().long()

    # -- network on patches
    def _forward(self, patches: list[torch.Tensor], index: list[int]) -> list[torch.Tensor]:
        """Weighted region parts ``(w * f(patch))[in_patch]``, float64 ``[l, *part]``.

        ``patches``: inputs ``[*roi]``; ``index``: which of ``self.patches`` each one is.
        Only the part inside the region is weighted and kept (a small contiguous copy,
        so the whole patch output can be freed).
        """
        out = []
        for i in range(0, len(patches), self.sw_batch_size):
            batch = torch.stack(patches[i:i + self.sw_batch_size])[:, None]
            with torch.no_grad():
                y = self.network(batch.to(self.device, self.dtype))
            self.stats.model_calls += 1
            y = y.detach().cpu()
            for yi, p in zip(y, index[i:i + self.sw_batch_size]):
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
                chunk = jobs[done:done + self.sw_batch_size]
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
        """MONAI's fusion on the region: sum of weighted patch logits over the weight sum."""
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
        from monai.inferers import sliding_window_inference

        removed = _removed_voxels(keep, self.units_full)
        x = torch.where(removed, self.base, self.image)[:, None].to(torch.float64)

        def predictor(p):
            self.stats.patch_misses += p.shape[0]
            with torch.no_grad():
                return self.network(p.to(self.device, self.dtype)).detach().cpu().to(torch.float64)

        y = sliding_window_inference(x, self.roi_size, self.sw_batch_size, predictor, overlap=self.overlap,
                                     mode=self.mode, sigma_scale=self.sigma_scale,
                                     padding_mode=self.padding_mode, cval=self.cval)
        self.stats.coalitions += len(keep)
        self.stats.model_calls += 1
        return torch.as_tensor(y)[(slice(None), slice(None), *self.out_box)]


def _scan_interval(image_size, roi_size, overlap) -> tuple[int, ...]:
    """MONAI's ``_get_scan_interval`` (private there, so mirrored here and checked in tests)."""
    out = []
    for s, r, o in zip(image_size, roi_size, overlap):
        out.append(int(r) if r == s else max(int(r * (1 - o)), 1))
    return tuple(out)


def _removed_voxels(keep: np.ndarray, units: torch.Tensor) -> torch.Tensor:
    """``[b, *s]`` bool: voxel belongs to a unit removed by the coalition (unit -1: never)."""
    keep = torch.as_tensor(np.asarray(keep, bool))
    table = torch.cat([keep, torch.ones((keep.shape[0], 1), dtype=torch.bool)], dim=1)  # id -1 -> last
    idx = torch.where(units >= 0, units, torch.full_like(units, keep.shape[1]))
    return ~table[:, idx]


def _baseline_like(baseline, image: torch.Tensor) -> torch.Tensor:
    base = torch.as_tensor(baseline, dtype=torch.float32)
    return base.expand(image.shape).clone() if base.dim() == 0 else base.reshape(image.shape).float()


# ============================================================ the game
@dataclass
class UnitGame:
    """The cooperative game of one case: ``values(keep [n, M]) -> [n, C]``.

    Attributes:
        classes: explained class ids (channels).
        partition: ``[*S]`` effective unit ids ``0..M-1``; ``-1`` = never perturbed.
        unit_ids: ``[M]`` id of each effective unit in the partition given by the caller.
        prediction: ``[*S]`` clean argmax prediction of the model on the whole volume.
        out_box, region_box: the ROI bounding box (read) and the perturbable box.
    """

    engine: object
    classes: list[int]
    partition: np.ndarray
    unit_ids: np.ndarray
    prediction: np.ndarray
    rois: torch.Tensor
    p0: torch.Tensor
    value: str
    reduce: str
    out_box: Box | None
    region_box: Box | None
    batch_size: int = 4
    clean_logits: torch.Tensor | None = None  # [1, l, *r] logits of the full coalition

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats if self.engine is not None else EngineStats()

    def values(self, keep: np.ndarray) -> np.ndarray:
        """Values ``[n, C]`` (float64) of keep-masks ``[n, M]``, evaluated in batches."""
        keep = np.asarray(keep, bool)
        keep = keep.reshape(len(keep) if keep.ndim > 1 else 1, self.n_units)
        if self.engine is None:
            return np.zeros((len(keep), len(self.classes)))
        out = []
        for i in range(0, len(keep), self.batch_size):
            for row in self.engine.iter_logits(keep[i:i + self.batch_size]):
                out.append(coalition_values(row[None], self.classes, self.p0, self.rois,
                                            self.value, self.reduce))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)))


def build_game(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None, *,
               partition: str | np.ndarray = "semantic", value: str = "logit", reduce: str = "sum",
               roi: np.ndarray | None = None, roi_margin: int = 3, baseline=0.0,
               labels: np.ndarray | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
               n_per_axis: int | Sequence[int] = 4, scale_mm: float = 30.0,
               offset_mm: Sequence[float] | None = None, exclude_labels: Sequence[int] = (),
               receptive_field: int | Sequence[int] | None = None,
               roi_size: int | Sequence[int] | None = None, overlap: float = 0.25,
               mode: str = "gaussian", sigma_scale: float = 0.125, padding_mode: str = "constant",
               cval: float = 0.0, sw_batch_size: int = 4, inference: str = "cached",
               cache_mb: float = 1024.0, batch_size: int | None = None,
               prediction: np.ndarray | None = None, device=None) -> UnitGame:
    """Set up the unit game of one image (see module docstring; parameters as in
    :func:`kernelshap_explain`). ``prediction`` (clean argmax ``[*S]``) skips the clean pass.
    ``device`` is accepted for symmetry with the gradient methods: inputs always go to
    the device of the model's parameters."""
    image = _check_image(image)
    shape = tuple(image.shape[1:])
    if batch_size is None:  # whole volumes per model call vs. streamed patches
        batch_size = 4 if roi_size is None else 16
    if value not in VALUES:
        raise InputError("value", f"unknown value function '{value}' (use {', '.join(VALUES)})")
    if reduce not in ("sum", "mean"):
        raise InputError("reduce", f"unknown reduction '{reduce}' (use sum or mean)")
    network = getattr(model, "network", model) if roi_size is not None else model
    if prediction is None:
        prediction, n_classes = _clean_prediction(network, image, roi_size, overlap, mode, sigma_scale,
                                                  padding_mode, cval, sw_batch_size)
    else:
        prediction = np.asarray(prediction.cpu() if torch.is_tensor(prediction) else prediction)
        n_classes = int(prediction.max()) + 1
    classes = list(range(n_classes)) if classes is None else [int(c) for c in classes]
    rois_full = default_rois(prediction, classes, value, roi, roi_margin)
    if value == "logit" and classes:  # the logit value reads only the predicted voxels
        rois_full &= np.stack([prediction == c for c in classes])
    units = _partition(partition, shape, prediction if labels is None else labels, spacing,
                       n_per_axis, scale_mm, offset_mm, exclude_labels)
    out_box = bounding_box(rois_full.any(axis=0)) if classes else None
    empty = UnitGame(None, classes, np.full(shape, -1, np.int64), np.zeros(0, np.int64), prediction,
                     torch.zeros(0), torch.zeros(0), value, reduce, None, None, batch_size)
    if out_box is None:
        return empty
    region = _region_box(out_box, shape, receptive_field, roi_size, overlap)
    in_region = np.zeros(shape, bool)
    in_region[region] = True
    eff, unit_ids = relabel(np.where(in_region, units, -1))
    if unit_ids[0] == -1:  # relabel put -1 first
        eff, unit_ids = eff - 1, unit_ids[1:]
    eff = np.where(in_region, eff, -1)
    if roi_size is None:
        crop = region if receptive_field is not None else None
        engine = DirectEngine(network, image, eff, baseline, out_box, crop, batch_size)
    else:
        engine = SlidingWindowEngine(network, image, eff, baseline, out_box, roi_size, overlap, mode,
                                     sigma_scale, padding_mode, cval, sw_batch_size, inference, batch_size,
                                     cache_mb)
    rois = torch.as_tensor(rois_full[(slice(None), *out_box)])
    game = UnitGame(engine, classes, eff, unit_ids, prediction, rois, torch.zeros(0), value, reduce,
                    out_box, region, batch_size)
    clean = engine.logits(np.ones((1, len(unit_ids)), bool))
    game.p0 = clean[0].argmax(dim=0)  # P0: the game's own unperturbed prediction
    game.clean_logits = clean
    return game


def _check_image(image) -> torch.Tensor:
    image = torch.as_tensor(image).detach().cpu()
    if image.dim() < 2 or image.shape[0] != 1:
        raise InputError("image", f"expected shape [1, *S], got {tuple(image.shape)}")
    return image


def _clean_prediction(network, image, roi_size, overlap, mode, sigma_scale, padding_mode, cval,
                      sw_batch_size) -> tuple[np.ndarray, int]:
    """Argmax prediction ``[*S]`` and channel count of the unperturbed image."""
    device, dtype = _model_device(network), _model_dtype(network)
    x = image[None].to(device, dtype)
    with torch.no_grad():
        if roi_size is None:
            y = network(x)
        else:
            from monai.inferers import sliding_window_inference
            y = sliding_window_inference(x, roi_size, sw_batch_size, network, overlap=overlap, mode=mode,
                                         sigma_scale=sigma_scale, padding_mode=padding_mode, cval=cval)
    y = torch.as_tensor(y).detach().cpu()
    return y[0].argmax(dim=0).numpy(), int(y.shape[1])


def _partition(partition, shape, labels, spacing, n_per_axis, scale_mm, offset_mm,
               exclude_labels=()) -> np.ndarray:
    if isinstance(partition, str):
        return make_partition(partition, shape, spacing, labels=labels, n_per_axis=n_per_axis,
                              scale_mm=scale_mm, offset_mm=offset_mm, exclude_labels=exclude_labels)
    units = np.asarray(partition.cpu() if torch.is_tensor(partition) else partition)
    if units.shape != shape or not np.issubdtype(units.dtype, np.integer):
        raise InputError("partition", f"a label map must be integer with shape {shape}, got {units.dtype} {units.shape}")
    return units.astype(np.int64)


def _region_box(out_box: Box, shape, receptive_field, roi_size, overlap) -> Box:
    """Perturbable box: ROI box dilated by the receptive field.

    Without ``receptive_field``: a sliding-window model's exact support (every patch that
    overlaps the ROI box), or the whole volume for a direct model.
    """
    if receptive_field is not None:
        return dilate_box(out_box, receptive_field, shape)
    if roi_size is None:
        return tuple(slice(0, s) for s in shape)
    from monai.data.utils import dense_patch_slices
    from monai.utils import ensure_tuple_rep, fall_back_tuple
    roi = fall_back_tuple(roi_size, shape)
    pad_before = [max(r - s, 0) // 2 for r, s in zip(roi, shape)]
    padded = tuple(max(s, r) for s, r in zip(shape, roi))
    slices = dense_patch_slices(padded, roi, _scan_interval(padded, roi, ensure_tuple_rep(overlap, len(shape))))
    out_pad = _shift(out_box, [-b for b in pad_before])
    hits = [sl for sl in slices if _intersect(tuple(slice(int(s.start), int(s.stop)) for s in sl), out_pad)]
    box = _shift(_box_union([tuple(slice(int(s.start), int(s.stop)) for s in sl) for sl in hits]), pad_before)
    return tuple(slice(max(b.start, 0), min(b.stop, s)) for b, s in zip(box, shape))


# ============================================================ estimator and public API
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


def shapley_from_game(game_values: Callable[[np.ndarray], np.ndarray], n_units: int,
                      n_coalitions: int = 200, seed: int | None = 0) -> tuple[np.ndarray, dict]:
    """KernelSHAP on any game: ``game_values(keep [n, M] bool) -> [n, C]``.

    Returns ``(values [C, M], info)`` with ``info`` keys ``v_full``, ``v_empty``,
    ``exact``, ``n_evaluations``.
    """
    ends = np.stack([np.ones(n_units, bool), np.zeros(n_units, bool)])
    v_full, v_empty = game_values(ends)
    masks, weights, exact = sample_coalitions(n_units, n_coalitions, seed)
    values = game_values(masks) if len(masks) else np.zeros((0, len(v_full)))
    phi = solve_kernel_shap(masks, weights, values, v_empty, v_full)
    return phi, {"v_full": v_full, "v_empty": v_empty, "exact": bool(exact or n_units < 2),
                 "n_evaluations": len(masks) + 2}


def kernelshap_run(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None, *,
                   n_coalitions: int = 200, seed: int | None = 0, **params) -> UnitAttribution:
    """KernelSHAP of one image over units, with engine statistics (see :func:`kernelshap_explain`)."""
    start = time.perf_counter()
    unknown = set(params) - set(inspect.signature(build_game).parameters)
    if unknown:
        raise InputError("kernelshap", f"unknown parameter(s) {', '.join(sorted(unknown))}")
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
            v = coalition_values(game.clean_logits, game.classes, game.p0, game.rois, game.value, game.reduce)
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
        model: ``[B, 1, *S] -> [B, l, *S]`` logits. With ``roi_size`` it is the patch
            network of a sliding-window predictor (an object with ``.network`` is
            unwrapped).
        image: ``[1, *S]`` scaled CT (HU window mapped to [0, 1]).
        classes: channels to explain (default: all ``l``).
        partition: ``cubes``, ``semantic`` (default), ``fcc``, ``hybrid`` or an integer
            label map ``[*S]`` of units.
        value: ``logit`` (default), ``tp``, ``fp``, ``dice``, ``softdice``; ``reduce``
            ``sum``/``mean`` for ``logit``.
        roi: bool ``[*S]`` or ``[C, *S]``; default see module docstring; ``roi_margin``
            (voxels, default 3) dilates the predicted mask for tp/fp/dice/softdice.
        baseline: value (or ``[*S]`` array) of removed voxels, default 0.0 (= -1024 HU).
        n_coalitions: evaluations including the full and empty coalitions (default 200);
            ``>= 2**M`` gives exact Shapley values.
        seed: sampling seed (results are deterministic for a seed).
        labels: organ label map ``[*S]`` for semantic/hybrid (default: the prediction).
        spacing, n_per_axis, scale_mm, offset_mm, exclude_labels: partition parameters
            (:func:`agg2exp_core.partitions.make_partition`); a label map may use -1
            for voxels that belong to no unit.
        receptive_field: voxels (int or per axis) by which the ROI box is dilated to get the
            perturbable box; default: the exact sliding-window support, or the whole
            volume for a direct model. A direct model then only sees that crop.
        roi_size, overlap, mode, sigma_scale, padding_mode, cval, sw_batch_size: MONAI
            sliding-window settings; ``roi_size=None`` calls the model on the volume.
        inference: ``cached`` (default), ``roi`` (ROI-restricted, no cache) or ``full``
            (MONAI on the whole perturbed volume per coalition, the naive reference);
            ``cache_mb`` (default 1024) bounds the memoised patch logits.
        batch_size: coalitions per engine call (default 4 whole volumes for a direct
            model; 16 for a sliding-window model, whose patches are streamed).

    Returns:
        ``[len(classes) or l, *S]`` tensor in the image's dtype, on the CPU.
    """
    dtype = torch.as_tensor(image).dtype
    result = kernelshap_run(model, image, classes, **params)
    out = torch.from_numpy(result.voxel_map())
    return out.to(dtype if dtype.is_floating_point else torch.float32)
