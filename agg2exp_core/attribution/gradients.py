"""Gradient attributions of the aggregated class function: VG, SmoothGrad, Integrated Gradients.

The explained scalar (Agg2Exp, Eq. 2) for class ``c`` is

    f̂_c(x) = Σ_v f_c(x)[v] · ŷ_c[v],      ŷ_c = [argmax_j f_j(x_clean) == c]

where the mask ``ŷ_c`` comes from the prediction on the *clean* image and stays fixed
for noisy (SmoothGrad) and interpolated (IG) inputs; ``aggregation="mean"`` divides
by the mask size.

- ``vg``: ∂f̂_c/∂x
- ``smoothgrad``: mean of VG over ``n_samples`` copies ``x + N(0, (sigma·(max x − min x))²)``
- ``ig``: ``(x − x') · ∫₀¹ ∂f̂_c/∂x (x' + α(x − x')) dα`` by a quadrature ``rule``

Efficiency: every method reduces to ``Σ_i a_i ∂f̂_c(x_i)/∂x_i`` over a stream of samples
``x_i`` with weights ``a_i``. All classes share one forward pass per batch of samples;
each class then costs one backward pass (``torch.autograd.grad`` with ``retain_graph``)
whose cotangent is the class mask times ``a_i``. Batching the l backward passes with
``is_grads_batched`` (a vmap over the backward graph) was measured slower on CPU for
a MONAI UNet (17 classes, 64x48x48, 2 samples, 2 threads: 3.5 s vs 2.2 s for the 17
backward passes), so the plain loop is kept. Empty classes skip their pass.
SmoothGrad given ``sample_maps=SampleMaps()`` also records each sample's own term (for
the sampling noise of the result); without it the loops do no extra work.

Large volumes (a window): the explained function is the output of the model's sliding
window (MONAI's ``sliding_window_inference`` or nnU-Net's tile fusion). Its fused logit
at voxel v is ``Σ_w imp_w[v] y_w[v] / count[v]``, so ``∂f̂_c/∂x = Σ_w vjp(window w, cotangent = imp_w · ŷ_c · scale / count)``: gradients are
accumulated window by window and peak memory is bounded by ``sw_batch_size`` windows
(plus the ``[k, *S]`` result and a few ``[*S]`` maps), never by a graph of the volume.
Which classes each window holds is tabulated once per volume; classes absent from a
batch of windows skip its backward pass, so all-class gradients cost one forward pass
per window plus one backward pass per (window, class present), not l full passes.
Results larger than ``sinks.STREAM_ABOVE_BYTES`` (or any result, given ``out=PATH.npy``)
accumulate in a memory-mapped file instead of RAM (``attribution.sinks``).

``autocast="bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA only) runs the network's forward
passes under ``torch.autocast``; masks, cotangents and sums stay in float32.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from agg2exp_core.attribution import options
from agg2exp_core.attribution.sinks import PadAdjoint, SampleMaps, check_out, check_sample_maps, open_sink
from agg2exp_core.errors import InputError
from agg2exp_core.models.devices import placed, resolve_device
from agg2exp_core.models.inference import Window, WindowGeometry, checked_forward, predict_logits
from agg2exp_core.vocabulary import IG_DEFAULT_RULE

IG_RULES = ("gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right")
COMMON_PARAMS = ("seed", "device", "batch_size", "aggregation", "mask", "window", "autocast", "out",
                 *options.WINDOW_KEYS)
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
METHOD_PARAMS = {"vg": (), "smoothgrad": ("n_samples", "sigma", "sample_maps"), "ig": ("steps", "baseline", "rule")}

# A stream of (input sample [1,*S], weight a_i) pairs, consumed once, in order.
Samples = Iterator[tuple[torch.Tensor, float]]


@dataclass(frozen=True)
class GradientConfig:
    """Validated parameters of one gradient explanation (defaults: the papers' settings)."""

    method: str
    seed: int = 0
    device: str = "auto"
    batch_size: int = 4               # samples per forward pass
    aggregation: str = "sum"
    mask: torch.Tensor | None = None  # [*S] clean predicted label map (skips the clean pass)
    window: Window | None = None
    autocast: str | None = None       # "bf16" | "fp16": lower-precision forward passes
    out: str | Path | None = None     # a .npy path: accumulate there (memory-mapped) and keep it
    n_samples: int = 20               # smoothgrad
    sigma: float = 0.1                # smoothgrad, times the image's value range
    sample_maps: SampleMaps | None = None  # smoothgrad: records each sample's term a_i ∇f̂(x_i)
    steps: int = 20                   # ig
    baseline: float | torch.Tensor | None = None  # ig; None: the model's air (options.default_baseline)
    rule: str = IG_DEFAULT_RULE   # not the paper's Eq. 5 (IG_PAPER_RULE): said where runs are shown

    @classmethod
    def from_params(cls, method: str, params: dict, image: torch.Tensor,
                    window: Window | None = None) -> "GradientConfig":
        params = dict(params)
        options.reject_unknown(method, params, COMMON_PARAMS + METHOD_PARAMS[method])
        window = options.check_window(options.pop_window(params, window), image)
        config = cls(method=method, window=window, **params)
        options.positive_int("batch_size", config.batch_size)
        options.check_aggregation(config.aggregation)
        options.check_seed(config.seed)
        mask = None if config.mask is None else options.check_mask(config.mask, image)
        if config.autocast is not None and config.autocast not in AUTOCAST:
            raise InputError("autocast", f"expected one of {', '.join(AUTOCAST)} or None, got {config.autocast!r}")
        check_out(config.out)
        if method == "smoothgrad":
            options.positive_int("n_samples", config.n_samples)
            options.finite_number("sigma", config.sigma, low=0.0)
            check_sample_maps(config.sample_maps)
        if method == "ig":
            options.positive_int("steps", config.steps)
            if config.rule not in IG_RULES:
                raise InputError("rule", f"expected one of {', '.join(IG_RULES)}, got {config.rule!r}")
            if config.rule == "riemann_trapezoid" and config.steps < 2:
                raise InputError("steps", "the trapezoid rule needs at least 2 steps")
            if config.baseline is not None:
                options.check_baseline(config.baseline, image)
        return replace(config, mask=mask, batch_size=int(config.batch_size), sigma=float(config.sigma),
                       seed=int(config.seed))


def explain_gradients(model, image: torch.Tensor, method: str, classes: Sequence[int] | None = None,
                      **params) -> torch.Tensor:
    """``[len(classes) or l, *S]`` gradient attributions in ``image.dtype``, on CPU (see module)."""
    network, window = options.split_model(model)
    config = GradientConfig.from_params(method, params, image, window)
    if method == "ig" and config.baseline is None:
        config = replace(config, baseline=options.default_baseline(model, image))
    classes = options.check_classes(classes)
    device = resolve_device(config.device)
    with placed(network, device) as model_dtype, torch.inference_mode(False), torch.enable_grad():
        dtype = model_dtype or image.dtype
        forward = _forward(network, config.autocast, device, dtype)
        x = image.detach().to(device=device, dtype=dtype, copy=True)
        labels = None if config.mask is None else config.mask.to(device)
        if labels is None and (config.window is not None or method != "vg"):
            labels = predict_logits(network, x, config.window).argmax(0).to(device)
        samples, factor = method_samples(config, x)
        new_sink = functools.partial(_new_sink, config, tuple(x.shape[1:]), x.dtype, image.dtype, device)
        if config.window is None:  # VG without windows reuses its own forward pass as the clean one
            sink = _direct_gradients(forward, samples, labels, classes, config, new_sink)
        else:
            geometry = config.window.geometry(x.shape[1:])
            sink = _sliding_gradients(forward, samples, labels, classes, config, geometry, new_sink)
        if factor is not None:
            sink.multiply(factor[0])
        return sink.result(image.dtype)


def _new_sink(config: GradientConfig, shape: tuple[int, ...], compute_dtype, out_dtype, device, k: int):
    """The sum's sink of k rows (and the per-sample maps' storage, when they are asked for)."""
    if config.sample_maps is not None:
        config.sample_maps.open(config.n_samples, k, shape)
    return open_sink((k, *shape), compute_dtype, out_dtype, device, config.out)


def _forward(network, autocast: str | None, device: torch.device, dtype: torch.dtype):
    """The checked forward pass, under ``torch.autocast`` when asked (logits back in ``dtype``)."""
    if autocast is None:
        return lambda inputs: checked_forward(network, inputs)
    if autocast == "fp16" and device.type != "cuda":
        raise InputError("autocast", "fp16 needs a CUDA device; use 'bf16' on the CPU")
    if dtype != torch.float32:
        raise InputError("autocast", f"needs a float32 model, got {dtype}")

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=AUTOCAST[autocast]):
            logits = checked_forward(network, inputs)
        return logits.to(dtype)
    return forward


# ----------------------------------------------------------------------------- samples
def method_samples(config: GradientConfig, x: torch.Tensor) -> tuple[Samples, torch.Tensor | None]:
    """The samples ``(x_i, a_i)`` of a method and the factor ``[1,*S]`` that multiplies
    ``Σ_i a_i ∇f̂(x_i)`` (IG's ``x - x'``; None for VG and SmoothGrad)."""
    if config.method == "vg":
        return iter([(x, 1.0)]), None
    if config.method == "smoothgrad":
        return noisy_samples(x, config.n_samples, config.sigma, config.seed), None
    baseline = torch.as_tensor(config.baseline).to(device=x.device, dtype=x.dtype).expand_as(x)
    delta = x - baseline
    alphas, weights = ig_quadrature(config.rule, config.steps)
    path = ((baseline + a * delta, w) for a, w in zip(alphas, weights))
    return path, delta


def noisy_samples(x: torch.Tensor, n: int, sigma: float, seed: int) -> Samples:
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
    ``riemann_right`` is the paper's Eq. 5 (O(1/steps)). The nodes are Captum's; so are the
    weights except ``riemann_trapezoid``, whose weights here sum to 1 (Captum's sum to
    (steps-1)/steps: nodes 1/(steps-1) apart weighed 1/steps; tests/core/attribution/test_captum_parity.py).
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
class Targets:
    """The explained classes and their aggregation weights ``ŷ_c · scale_c``."""

    labels: torch.Tensor      # [*S] (or padded [*P]) predicted label map, -1 = no class (int16)
    classes: list[int]        # channel per output row
    scales: list[float]       # 1 (sum) or 1/|ŷ_c| (mean); 0 for an empty class

    @classmethod
    def build(cls, labels: torch.Tensor, classes: list[int] | None, n_labels: int,
              aggregation: str) -> "Targets":
        classes = list(range(n_labels)) if classes is None else classes
        bad = [c for c in classes if c >= n_labels]
        if bad:
            raise InputError("classes", f"class {bad[0]} is out of range for a model with {n_labels} labels")
        small = n_labels < 2**15 and int(labels.max()) < 2**15
        labels = labels.to(torch.int16 if small else torch.int32).clamp_min(-1)  # 1/4 of int64
        counts = _class_counts(labels, n_labels).tolist()
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

    def presence(self, regions: Sequence[tuple], n_labels: int) -> torch.Tensor:
        """``[len(regions), k]`` bool: whether row j's mask meets each region (one pass per region)."""
        rows = torch.as_tensor(self.classes, dtype=torch.long)
        return torch.stack([_class_counts(self.labels[r], n_labels).cpu()[rows] > 0 for r in regions])


def _class_counts(labels: torch.Tensor, n_labels: int) -> torch.Tensor:
    """Voxels per class ``[n_labels]`` of a label map (-1 = no class)."""
    return torch.bincount(labels.flatten() + 1, minlength=n_labels + 1)[1:n_labels + 1]


# ----------------------------------------------------------------------------- gradients
def _direct_gradients(forward, samples: Samples, labels: torch.Tensor | None, classes: list[int] | None,
                      config: GradientConfig, new_sink):
    """Whole-volume forward passes, ``batch_size`` samples at a time."""
    targets, sink, first = None, None, 0
    recorder = config.sample_maps
    while batch := list(itertools.islice(samples, config.batch_size)):
        inputs = torch.stack([s for s, _ in batch]).requires_grad_(True)  # [b,1,*S]
        logits = forward(inputs)                                          # [b,l,*S]
        if targets is None:
            # VG without a given mask: the clean prediction is this very forward pass.
            labels = logits[0].detach().argmax(0) if labels is None else labels
            targets = Targets.build(labels, classes, logits.shape[1], config.aggregation)
            sink = new_sink(len(targets.classes))
        a = inputs.new_tensor([w for _, w in batch]).view(-1, *[1] * (inputs.dim() - 2))  # [b,1,1,1]

        def accumulate(j: int, grad: torch.Tensor, first=first) -> None:
            sink.add(j, (), grad.sum(0)[0])
            if recorder is not None:
                for i, g in enumerate(grad):
                    recorder.add(first + i, j, (), g[0])

        _backward_per_class(logits, inputs, targets, targets.active,
                            cotangent_of=lambda j: a * targets.weight(j, dtype=logits.dtype), accumulate=accumulate)
        sink.release()
        first += len(batch)
    return sink


def _backward_per_class(logits: torch.Tensor, inputs: torch.Tensor, targets: Targets,
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


def _sliding_gradients(forward, samples: Samples, labels: torch.Tensor, classes: list[int] | None,
                       config: GradientConfig, geometry: WindowGeometry, new_sink):
    """Gradients through sliding-window inference, accumulated window by window.

    The fused logit is ``Σ_w imp · y_w / count``, so the cotangent of window w's output is
    ``a_i · imp · ŷ_c · scale_c / count`` on its region. ``sw_batch_size`` windows of one
    sample go through the network at a time and their graph is freed after the class
    loop, so memory does not grow with the volume. A class enters the backward passes
    of a batch only if one of its windows holds it (tabulated once, for all samples).
    """
    device = labels.device
    padded_labels = pad_labels(labels, geometry)  # padded voxels are cropped after fusion: no class
    fold = PadAdjoint(geometry)
    windows = list(geometry.slices)
    targets = sink = presence = importance = inv_count = None
    recorder = config.sample_maps
    for index, (sample, weight) in enumerate(samples):
        padded = geometry.pad(sample[None])  # [1,1,*P]
        if importance is None:
            importance = geometry.importance(device, padded.dtype)
            inv_count = geometry.count(device, padded.dtype).reciprocal_()  # one [*P] map, not two
        for ids in _chunks(list(range(len(windows))), geometry.spec.sw_batch_size):
            group = [windows[i] for i in ids]
            inputs = torch.cat([padded[(slice(None), slice(None), *s)] for s in group]).requires_grad_(True)
            logits = forward(inputs)  # [n_win,l,*roi]
            if targets is None:
                targets = Targets.build(padded_labels, classes, logits.shape[1], config.aggregation)
                presence = targets.presence(windows, logits.shape[1])  # [n_windows, k]
                sink = new_sink(len(targets.classes))
            blend = torch.stack([weight * importance * inv_count[s] for s in group])  # [n_win,*roi]
            here = presence[ids]

            def cotangent_of(j: int, group=group, blend=blend, here=here) -> torch.Tensor:
                masks = [targets.weight(j, s, blend.dtype) if h else blend.new_zeros(())
                         for s, h in zip(group, here[:, j].tolist())]
                return blend * torch.stack([m.expand(blend.shape[1:]) for m in masks])

            def accumulate(j: int, grad: torch.Tensor, group=group, here=here, index=index) -> None:
                for g, s, h in zip(grad, group, here[:, j].tolist()):
                    if h:  # a window without the class gets a zero cotangent, hence a zero gradient
                        box, image_grad = fold(s, g[0])
                        sink.add(j, box, image_grad)
                        if recorder is not None:
                            recorder.add(index, j, box, image_grad)

            rows = [j for j in targets.active if bool(here[:, j].any())]
            _backward_per_class(logits, inputs, targets, rows, cotangent_of, accumulate)
            sink.release()
    return sink


def pad_labels(labels: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    pad = geometry.torch_pad
    return F.pad(labels[None], pad, value=-1)[0] if any(pad) else labels


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
