"""Voxel attributions of the aggregated class function of a 3D segmentation model.

The explained scalar (Agg2Exp, Eq. 2) for class ``c`` is

    f̂_c(x) = Σ_v f_c(x)[v] · ŷ_c[v],      ŷ_c = [argmax_j f_j(x_clean) == c]

where the mask ``ŷ_c`` comes from the prediction on the *clean* image and stays fixed
for noisy (SmoothGrad) and interpolated (IG) inputs; ``aggregation="mean"`` divides
by the mask size. Gradient methods:

- ``vg``: ∂f̂_c/∂x
- ``smoothgrad``: mean of VG over ``n_samples`` copies ``x + N(0, (sigma·(max x − min x))²)``
- ``ig``: ``(x − x') · ∫₀¹ ∂f̂_c/∂x (x' + α(x − x')) dα`` by a quadrature ``rule``
- ``kernelshap``: dispatched to :func:`agg2exp_core.kernelshap.kernelshap_explain`.

Efficiency: every method reduces to ``Σ_i a_i ∂f̂_c(x_i)/∂x_i`` over samples ``x_i``
with weights ``a_i``. All classes share one forward pass per batch of samples; each
class then costs one backward pass (``torch.autograd.grad`` with ``retain_graph``) whose
cotangent is the class mask times ``a_i``. Batching the l backward passes with
``is_grads_batched`` (a vmap over the backward graph) was measured slower on CPU for
a MONAI UNet (17 classes, 64x48x48, 2 samples, 2 threads: 3.5 s vs 2.2 s for the 17
backward passes), so the plain loop is kept. Empty classes skip their pass.

Large volumes (``roi_size`` given): the explained function is the output of
``monai.inferers.sliding_window_inference`` (same ``overlap``, ``mode``, ``sigma_scale``,
padding). Its fused logit at voxel v is ``Σ_w imp_w[v] y_w[v] / count[v]``, so
``∂f̂_c/∂x = Σ_w vjp(window w, cotangent = imp_w · ŷ_c · scale / count)``: gradients are
accumulated window by window and peak memory is bounded by ``sw_batch_size`` windows
(plus the ``[k, *S]`` result and a few ``[*S]`` maps), never by a graph of the volume.
"""
from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from agg2exp_core.errors import InputError

METHODS = ("vg", "smoothgrad", "ig", "kernelshap")
IG_RULES = ("gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right")
BLEND_MODES = ("gaussian", "constant")
PAD_MODES = ("constant", "reflect", "replicate", "circular")

# Parameters of the gradient methods and their defaults (kernelshap owns its own).
_COMMON = {
    "seed": 0, "device": "auto", "batch_size": 4, "aggregation": "sum", "mask": None,
    "roi_size": None, "overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian",
    "sigma_scale": 0.125, "padding_mode": "constant", "cval": 0.0,
}
_DEFAULTS = {
    "vg": dict(_COMMON),
    "smoothgrad": {**_COMMON, "n_samples": 20, "sigma": 0.1},
    "ig": {**_COMMON, "steps": 20, "baseline": 0.0, "rule": "gausslegendre"},
}

# A stream of (input sample [1,*S], weight a_i) pairs, consumed once, in order.
Samples = Iterator[tuple[torch.Tensor, float]]


def explain(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, method: str,
            classes: Sequence[int] | int | None = None, **params) -> torch.Tensor:
    """Attributions of every requested class's aggregated logit to every input voxel.

    Args:
        model: callable ``[B,1,*S] -> [B,l,*S]`` logits (an ``nn.Module`` is moved to
            ``device`` for the call and moved back; its parameters are left untouched).
            Use eval mode: samples are batched, so train-mode BatchNorm would mix them.
        image: ``[1,*S]`` floating-point tensor (3 spatial dims).
        method: ``"vg"``, ``"smoothgrad"``, ``"ig"`` or ``"kernelshap"``.
        classes: channel ids to explain (order kept); ``None`` = all ``l``.
        **params: common to vg/smoothgrad/ig:
            ``mask`` (``[*S]`` predicted label map; skips the clean forward pass),
            ``aggregation`` (``"sum"`` | ``"mean"``), ``batch_size`` (samples per forward
            pass, default 4), ``device`` (``"auto"`` = CUDA when available), ``seed`` (0),
            ``roi_size`` / ``overlap`` (0.25) / ``sw_batch_size`` (1) / ``mode``
            (``"gaussian"``) / ``sigma_scale`` (0.125) / ``padding_mode`` / ``cval``
            (sliding-window inference as in MONAI; off when ``roi_size`` is None).
            smoothgrad: ``n_samples`` (20), ``sigma`` (0.1, times the image's value range).
            ig: ``steps`` (20), ``baseline`` (0.0; scalar or ``[1,*S]``/``[*S]`` tensor),
            ``rule`` (``"gausslegendre"`` default, as Captum; or ``"riemann_middle"``,
            ``"riemann_trapezoid"``, ``"riemann_left"``, ``"riemann_right"`` = paper Eq. 5).
            kernelshap: see :mod:`agg2exp_core.kernelshap`.

    Returns:
        ``[len(classes) or l, *S]`` attributions in ``image.dtype``, on CPU. A class with
        an empty mask gets zeros.

    Raises:
        InputError (a ValueError, one line): bad image, method, class or parameter.
    """
    method = _check_method(method)
    image = _check_image(image)
    if method == "kernelshap":
        from agg2exp_core.kernelshap import kernelshap_explain  # written separately; import lazily

        return kernelshap_explain(model, image, classes=classes, **_kernelshap_names(params))
    opts = _check_params(method, params, image)
    classes = _check_classes(classes)
    device = _resolve_device(opts["device"])
    with _placed(model, device) as model_dtype, torch.inference_mode(False), torch.enable_grad():
        dtype = model_dtype or image.dtype
        x = image.detach().to(device=device, dtype=dtype, copy=True)
        labels = None if opts["mask"] is None else opts["mask"].to(device)
        window = _SlidingWindow.build(x.shape[1:], opts, device, dtype) if opts["roi_size"] else None
        if labels is None and (window is not None or method != "vg"):
            labels = _predict_labels(model, x, opts)  # VG without windows reuses its own forward
        samples, finish = _method_samples(method, x, opts)
        grads = _gradients(model, samples, labels, classes, opts, window)
        return finish(grads).to(device="cpu", dtype=image.dtype)


# ----------------------------------------------------------------------------- methods
def _kernelshap_names(params: dict) -> dict:
    """Same common parameter names for every method: kernelshap calls the clean label
    map ``prediction`` and the aggregation ``reduce``, so ``mask`` / ``aggregation`` map there."""
    params = dict(params)
    for ours, theirs in (("mask", "prediction"), ("aggregation", "reduce")):
        if ours in params and theirs not in params:
            params[theirs] = params.pop(ours)
    return params


def _method_samples(method: str, x: torch.Tensor, opts: dict
                    ) -> tuple[Samples, Callable[[torch.Tensor], torch.Tensor]]:
    """The samples ``(x_i, a_i)`` of a method and the map applied to ``Σ_i a_i ∇f̂(x_i)``."""
    if method == "vg":
        return iter([(x, 1.0)]), lambda g: g
    if method == "smoothgrad":
        return _noisy_samples(x, opts["n_samples"], opts["sigma"], opts["seed"]), lambda g: g
    baseline = torch.as_tensor(opts["baseline"]).to(device=x.device, dtype=x.dtype).expand_as(x)
    delta = x - baseline
    alphas, weights = ig_quadrature(opts["rule"], opts["steps"])
    path = ((baseline + a * delta, w) for a, w in zip(alphas, weights))
    return path, lambda g: g * delta  # [k,*S] * [1,*S]


def _noisy_samples(x: torch.Tensor, n: int, sigma: float, seed: int) -> Samples:
    """``n`` copies ``x + ε_i``, ``ε_i ~ N(0, (sigma·(max x − min x))²)``, weight ``1/n``.

    Noise is drawn on CPU in float32 from a private generator, one sample at a time, so
    it depends only on ``seed`` (not on device or ``batch_size``); with the same seed it
    equals Captum's ``NoiseTunnel`` noise after ``torch.manual_seed(seed)`` when the voxel
    count is a multiple of 16 (used by the benchmark's equality check).
    """
    std = torch.tensor(float(sigma) * float(x.max() - x.min()), dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(n):
        noise = torch.randn(tuple(x.shape), generator=gen, dtype=torch.float32) * std
        yield x + noise.to(device=x.device, dtype=x.dtype), 1.0 / n


def ig_quadrature(rule: str, steps: int) -> tuple[list[float], list[float]]:
    """Nodes ``α_i`` in [0, 1] and weights of ``∫₀¹ g(α) dα ≈ Σ_i w_i g(α_i)`` (Captum's rules).

    ``gausslegendre`` is exact for polynomials of degree < 2·steps and converges fastest
    for smooth paths; ``riemann_middle`` / ``riemann_trapezoid`` converge as O(1/steps²);
    ``riemann_right`` is the paper's Eq. 5 (O(1/steps)).
    """
    n = int(steps)
    if rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return list(0.5 * (nodes + 1.0)), list(0.5 * w)
    if rule == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] *= 0.5
        return list(alphas), list(w)
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[rule]
    return list((np.arange(n) + offset) / n), [1.0 / n] * n


# ----------------------------------------------------------------------------- targets
@dataclass
class _Targets:
    """The explained classes and their aggregation weights ``ŷ_c · scale_c``."""

    labels: torch.Tensor      # [*S] (or padded [*P]) predicted label map, -1 = no class
    classes: list[int]        # channel per output row
    scales: list[float]       # 1 (sum) or 1/|ŷ_c| (mean); 0 for an empty class

    @classmethod
    def build(cls, labels: torch.Tensor, classes: list[int] | None, n_labels: int,
              aggregation: str) -> "_Targets":
        classes = list(range(n_labels)) if classes is None else classes
        bad = [c for c in classes if c >= n_labels]
        if bad:
            raise InputError("classes", f"class {bad[0]} is out of range for a model with {n_labels} labels")
        counts = torch.bincount(labels.flatten().clamp_min(-1) + 1, minlength=n_labels + 1)[1:].tolist()
        scales = [0.0 if counts[c] == 0 else (1.0 / counts[c] if aggregation == "mean" else 1.0)
                  for c in classes]
        return cls(labels, classes, scales)

    @property
    def active(self) -> list[int]:
        """Rows whose mask is non-empty (the others stay zero, no backward pass)."""
        return [j for j, s in enumerate(self.scales) if s != 0.0]

    def weight(self, j: int, region: tuple = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``ŷ_c · scale_c`` of row ``j`` on ``labels[region]``."""
        return (self.labels[region] == self.classes[j]).to(dtype) * self.scales[j]

    def present(self, j: int, regions: list[tuple]) -> bool:
        """Whether row j's mask meets any of ``regions`` (else its backward pass is skipped)."""
        return any(bool((self.labels[r] == self.classes[j]).any()) for r in regions)


# ----------------------------------------------------------------------------- gradients
def _gradients(model, samples: Samples, labels: torch.Tensor | None, classes: list[int] | None,
               opts: dict, window: "_SlidingWindow | None") -> torch.Tensor:
    """``Σ_i a_i ∂f̂_c(x_i)/∂x_i`` for every requested class: ``[k, *S]``."""
    if window is not None:
        return _sliding_gradients(model, samples, labels, classes, opts, window)
    return _direct_gradients(model, samples, labels, classes, opts)


def _direct_gradients(model, samples: Samples, labels: torch.Tensor | None,
                      classes: list[int] | None, opts: dict) -> torch.Tensor:
    """Whole-volume forward passes, ``batch_size`` samples at a time."""
    targets, total = None, None
    while batch := list(itertools.islice(samples, opts["batch_size"])):
        inputs = torch.stack([s for s, _ in batch]).requires_grad_(True)  # [b,1,*S]
        logits = _forward(model, inputs)                                  # [b,l,*S]
        if targets is None:
            # VG without a given mask: the clean prediction is this very forward pass.
            labels = logits[0].detach().argmax(0) if labels is None else labels
            targets = _Targets.build(labels, classes, logits.shape[1], opts["aggregation"])
            total = inputs.new_zeros((len(targets.classes),) + tuple(inputs.shape[2:]))
        a = inputs.new_tensor([w for _, w in batch]).view(-1, *[1] * (inputs.dim() - 2))  # [b,1,1,1]
        _backward_per_class(logits, inputs, targets, targets.active,
                            cotangent_of=lambda j: a * targets.weight(j, dtype=logits.dtype),
                            accumulate=lambda j, g: total[j].add_(g.sum(0)[0]))
    return total


def _backward_per_class(logits: torch.Tensor, inputs: torch.Tensor, targets: _Targets,
                        rows: list[int], cotangent_of: Callable[[int], torch.Tensor],
                        accumulate: Callable[[int, torch.Tensor], None]) -> None:
    """One backward pass per class row, all sharing the forward graph of ``logits``.

    ``cotangent_of(j)`` is the ``[b,*roi]`` cotangent of channel ``classes[j]`` (zero in
    the other channels); ``accumulate(j, grad)`` receives the ``[b,1,*roi]`` input gradient.
    """
    cotangent = torch.zeros_like(logits)  # reused: only one channel is non-zero at a time
    for t, j in enumerate(rows):
        c = targets.classes[j]
        cotangent[:, c] = cotangent_of(j)
        (grad,) = torch.autograd.grad(logits, inputs, cotangent, retain_graph=t < len(rows) - 1)
        accumulate(j, grad)
        cotangent[:, c] = 0


def _forward(model, inputs: torch.Tensor, differentiable: bool = True) -> torch.Tensor:
    """Logits of a batch, checked to be ``[b, l, *S]`` (and differentiable in the input)."""
    logits = model(inputs)
    if not isinstance(logits, torch.Tensor) or logits.dim() != inputs.dim() \
            or logits.shape[0] != inputs.shape[0] or logits.shape[2:] != inputs.shape[2:]:
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError("model", f"expected logits [B, l, *S] = [{inputs.shape[0]}, l, "
                         f"{', '.join(map(str, inputs.shape[2:]))}], got {got}")
    if differentiable and not logits.requires_grad:
        raise InputError("model", "its output does not depend differentiably on the input")
    return logits


# ----------------------------------------------------------------------------- sliding window
@dataclass
class _SlidingWindow:
    """MONAI's sliding-window geometry: padding, window slices, importance and count maps."""

    pad: list[int]                   # F.pad widths, last spatial dim first (as MONAI)
    slices: list[tuple[slice, ...]]  # window regions on the padded grid
    importance: torch.Tensor         # [*roi] blending weights of one window
    inv_count: torch.Tensor          # [*P] 1 / Σ_windows importance
    padding_mode: str
    cval: float

    @classmethod
    def build(cls, shape: Sequence[int], opts: dict, device: torch.device,
              dtype: torch.dtype) -> "_SlidingWindow":
        """Same choices as ``monai.inferers.sliding_window_inference`` (MONAI 1.x)."""
        from monai.data.utils import compute_importance_map, dense_patch_slices
        from monai.utils import ensure_tuple_rep, fall_back_tuple

        roi = fall_back_tuple(opts["roi_size"], tuple(shape))
        padded = tuple(max(s, r) for s, r in zip(shape, roi))
        pad = []
        for s, r in reversed(list(zip(shape, roi))):  # F.pad order: last dim first
            diff = max(r - s, 0)
            pad += [diff // 2, diff - diff // 2]
        overlap = ensure_tuple_rep(opts["overlap"], len(shape))
        # MONAI's _get_scan_interval: a full-size window does not move.
        interval = [r if r == p else max(int(r * (1 - o)), 1) for r, p, o in zip(roi, padded, overlap)]
        slices = dense_patch_slices(padded, roi, interval)
        importance = compute_importance_map(roi, mode=opts["mode"], sigma_scale=opts["sigma_scale"],
                                            device=device, dtype=dtype)
        count = torch.zeros(padded, device=device, dtype=dtype)
        for s in slices:
            count[s] += importance
        return cls(pad, slices, importance, 1.0 / count, opts["padding_mode"], float(opts["cval"]))

    def pad_image(self, x: torch.Tensor) -> torch.Tensor:
        """``[b,1,*S] -> [b,1,*P]`` as MONAI pads inputs smaller than the window."""
        if not any(self.pad):
            return x
        value = self.cval if self.padding_mode == "constant" else None
        return F.pad(x, self.pad, mode=self.padding_mode, value=value)

    def pad_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Padded voxels are cropped from MONAI's output: they belong to no class (-1)."""
        return F.pad(labels[None], self.pad, value=-1)[0] if any(self.pad) else labels

    def unpad_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """Pull ``[k,*P]`` gradients back through the padding (a crop for constant padding)."""
        if not any(self.pad):
            return grad
        shape = [grad.shape[0], 1] + [p - a - b for p, a, b in
                                      zip(grad.shape[1:], self.pad[-2::-2], self.pad[::-2])]
        leaf = grad.new_zeros(shape, requires_grad=True)
        with torch.enable_grad():
            (out,) = torch.autograd.grad(self.pad_image(leaf), leaf, grad[:, None])
        return out[:, 0]


def _sliding_gradients(model, samples: Samples, labels: torch.Tensor, classes: list[int] | None,
                       opts: dict, window: _SlidingWindow) -> torch.Tensor:
    """Gradients through sliding-window inference, accumulated window by window.

    The fused logit is ``Σ_w imp · y_w / count``, so the cotangent of window w's output is
    ``a_i · imp · ŷ_c · scale_c / count`` on its region. ``sw_batch_size`` windows of one
    sample go through the network at a time and their graph is freed after the class
    loop, so memory does not grow with the volume. Classes absent from the windows skip
    their backward pass.
    """
    padded_labels = window.pad_labels(labels)
    targets, total = None, None
    for sample, weight in samples:
        padded = window.pad_image(sample[None])  # [1,1,*P]
        for group in _chunks(window.slices, opts["sw_batch_size"]):
            inputs = torch.cat([padded[(slice(None), slice(None), *s)] for s in group]).requires_grad_(True)
            logits = _forward(model, inputs)  # [n_win,l,*roi]
            if targets is None:
                targets = _Targets.build(padded_labels, classes, logits.shape[1], opts["aggregation"])
                total = inputs.new_zeros((len(targets.classes),) + tuple(padded.shape[2:]))
            blend = torch.stack([weight * window.importance * window.inv_count[s] for s in group])  # [n_win,*roi]

            def cotangent_of(j: int, group=group, blend=blend) -> torch.Tensor:
                return blend * torch.stack([targets.weight(j, s, blend.dtype) for s in group])

            def accumulate(j: int, grad: torch.Tensor, group=group) -> None:
                for g, s in zip(grad, group):
                    total[(j, *s)] += g[0]

            rows = [j for j in targets.active if targets.present(j, group)]
            _backward_per_class(logits, inputs, targets, rows, cotangent_of, accumulate)
    return window.unpad_gradient(total)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _predict_labels(model, x: torch.Tensor, opts: dict) -> torch.Tensor:
    """Predicted label map ``[*S]`` of the clean image (MONAI sliding window if ``roi_size``)."""
    with torch.no_grad():
        if opts["roi_size"]:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(
                x[None], opts["roi_size"], opts["sw_batch_size"], model, overlap=opts["overlap"],
                mode=opts["mode"], sigma_scale=opts["sigma_scale"], padding_mode=opts["padding_mode"],
                cval=opts["cval"])
            logits = torch.as_tensor(logits)
        else:
            logits = _forward(model, x[None], differentiable=False)
    return logits[0].argmax(0)


# ----------------------------------------------------------------------------- devices
def _resolve_device(device) -> torch.device:
    """``"auto"`` = CUDA when available, else CPU."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError("device", f"not a torch device: {device!r}") from err
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())  # comparable with param.device
    return device


@contextmanager
def _placed(model, device: torch.device):
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


# ----------------------------------------------------------------------------- validation
def _check_method(method) -> str:
    name = method.lower() if isinstance(method, str) else method
    if name not in METHODS:
        raise InputError("method", f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    return name


def _check_image(image) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        if not isinstance(image, np.ndarray):
            raise InputError("image", f"expected a torch.Tensor [1, X, Y, Z], got {type(image).__name__}")
        image = torch.from_numpy(image)
    if image.dim() != 4 or image.shape[0] != 1:
        raise InputError("image", f"expected shape [1, X, Y, Z] (channel first, no batch), got {list(image.shape)}")
    if not image.is_floating_point():
        raise InputError("image", f"expected a floating-point tensor, got {image.dtype}")
    return image


def _check_classes(classes) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, (torch.Tensor, np.ndarray)):
        classes = classes.tolist()
    items = [classes] if isinstance(classes, (int, np.integer)) else list(classes)
    if not items or any(not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 0 for c in items):
        raise InputError("classes", f"expected non-negative channel ids, got {classes!r}")
    return [int(c) for c in items]


def _check_params(method: str, params: dict, image: torch.Tensor) -> dict:
    """Fill defaults and reject unknown or out-of-range parameters (one-line errors)."""
    allowed = _DEFAULTS[method]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InputError("explain", f"unknown parameter {unknown[0]!r} for method {method!r} "
                         f"(expected: {', '.join(sorted(allowed))})")
    opts = {**allowed, **params}
    _positive_int(opts, "batch_size")
    _positive_int(opts, "sw_batch_size")
    if opts["aggregation"] not in ("sum", "mean"):
        raise InputError("aggregation", f"expected 'sum' or 'mean', got {opts['aggregation']!r}")
    if opts["mode"] not in BLEND_MODES:
        raise InputError("mode", f"expected one of {', '.join(BLEND_MODES)}, got {opts['mode']!r}")
    if opts["padding_mode"] not in PAD_MODES:
        raise InputError("padding_mode", f"expected one of {', '.join(PAD_MODES)}, got {opts['padding_mode']!r}")
    overlaps = opts["overlap"] if isinstance(opts["overlap"], (tuple, list)) else [opts["overlap"]]
    if not all(isinstance(o, (int, float, np.number)) and 0 <= o < 1 for o in overlaps):
        raise InputError("overlap", f"expected values in [0, 1), got {opts['overlap']!r}")
    if not isinstance(opts["sigma_scale"], (tuple, list)):  # MONAI also takes one per dim
        _number(opts, "sigma_scale", low=0.0)
    _number(opts, "cval")
    if opts["roi_size"] is not None:
        roi = list(opts["roi_size"]) if isinstance(opts["roi_size"], (tuple, list)) else None
        if roi is None or len(roi) != image.dim() - 1 or not all(isinstance(r, (int, np.integer)) for r in roi):
            raise InputError("roi_size", f"expected {image.dim() - 1} ints, got {opts['roi_size']!r}")
        opts["roi_size"] = tuple(int(r) for r in roi)
    if opts["mask"] is not None:
        opts["mask"] = _check_mask(opts["mask"], image)
    if isinstance(opts["seed"], bool) or not isinstance(opts["seed"], (int, np.integer)):
        raise InputError("seed", f"expected an integer, got {opts['seed']!r}")
    if method == "smoothgrad":
        _positive_int(opts, "n_samples")
        _number(opts, "sigma", low=0.0)
    if method == "ig":
        _positive_int(opts, "steps")
        if opts["rule"] not in IG_RULES:
            raise InputError("rule", f"expected one of {', '.join(IG_RULES)}, got {opts['rule']!r}")
        if opts["rule"] == "riemann_trapezoid" and opts["steps"] < 2:
            raise InputError("steps", "the trapezoid rule needs at least 2 steps")
        _check_baseline(opts["baseline"], image)
    return opts


def _positive_int(opts: dict, key: str) -> None:
    value = opts[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(key, f"expected a positive integer, got {value!r}")
    opts[key] = int(value)


def _number(opts: dict, key: str, low: float | None = None) -> None:
    value = opts[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise InputError(key, f"expected a finite number{bound}, got {value!r}")
    opts[key] = float(value)


def _check_mask(mask, image: torch.Tensor) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise InputError("mask", f"expected a label map of shape {list(image.shape[1:])}, got {list(mask.shape)}")
    if mask.is_floating_point() and not torch.equal(mask, mask.round()):
        raise InputError("mask", "expected integer class ids")
    return mask.long()


def _check_baseline(baseline, image: torch.Tensor) -> None:
    shape = tuple(torch.as_tensor(baseline).shape)
    try:
        ok = torch.broadcast_shapes(shape, tuple(image.shape)) == tuple(image.shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise InputError("baseline", f"expected a scalar or a tensor broadcastable to {list(image.shape)}, got {list(shape)}")
