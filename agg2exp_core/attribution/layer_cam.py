"""Seg-Grad-CAM in 3-D (Vinogradova, Dibrov & Myers 2020): class evidence of a layer's feature maps.

For class ``c`` the explained score is the class logit aggregated over the predicted mask,
the same scalar as the gradient methods' (``gradients``):

    f̂_c(x) = Σ_v f_c(x)[v] · ŷ_c[v]      (``aggregation="sum"``, the paper's Σ over the pixel set M;
                                           ``"mean"`` divides by |ŷ_c|: the same map over |ŷ_c|)

With ``A^k`` the feature maps of the target layer (``target_layers``: by name, or the last
decoder block before the head), the channel weights are the spatially averaged gradients
``α_k = mean_u ∂f̂_c/∂A^k[u]`` and the map is ``ReLU(Σ_k α_k A^k)`` on the layer's grid,
upsampled to the model's input grid by trilinear interpolation (``align_corners=False``,
as Captum's ``LayerAttribution.interpolate``). Maps are non-negative, so their negative
mass is zero.

Written here rather than with Captum's ``LayerGradCam`` (the parity oracle of
tests/core/attribution/test_seg_gradcam.py) because Captum runs one forward pass per
class and per call; here every class shares one forward pass per window (one backward
pass per class present), like the gradient methods, and the windows are MONAI's or
nnU-Net's. Captum is a dev dependency only.

Sliding windows: every network call is one Grad-CAM. Window w's share of the fused score
is ``s_w = Σ_v imp_w ŷ_c y_w / count`` (the cotangent of the gradient methods), so
``f̂_c = Σ_w s_w``; its weights come from ``∂s_w/∂A_w``, and the volume's map is the sum of
the window maps (upsampled to the window, cropped to the image: padded voxels are dropped).
Windows without an explained class are not run at all. nnU-Net's test-time mirroring runs the
layer once per mirrored copy: each copy's weighted map is flipped back before the sum and the ReLU.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from agg2exp_core.attribution import options
from agg2exp_core.attribution.gradients import Targets, pad_labels
from agg2exp_core.attribution.sinks import check_out, open_sink
from agg2exp_core.attribution.target_layers import call_frames, hookable, resolve_layers
from agg2exp_core.errors import InputError
from agg2exp_core.models.devices import placed, resolve_device
from agg2exp_core.models.inference import WindowGeometry, checked_forward, predict_logits

CAM_PARAMS = ("layer", "seed", "device", "aggregation", "mask", "window", "out", *options.WINDOW_KEYS)

# (logits [b,l,*roi], the target layers' activations [b,K,*r] per call, the dims each call flipped)
Calls = tuple[list[torch.Tensor], list[tuple[int, ...]]]
Run = Callable[[torch.Tensor], tuple[torch.Tensor, Calls]]


def gradcam_explain(model, image: torch.Tensor, classes: Sequence[int] | None = None, **params) -> torch.Tensor:
    """``[len(classes) or l, *S]`` Seg-Grad-CAM maps (>= 0) in ``image.dtype``, on CPU (see module).

    Params: ``layer`` (a module name, e.g. ``"decoder.stages.4"``, or a list of names whose
    weighted maps are added; default per network, ``target_layers``), ``aggregation``,
    ``mask``, ``device``, ``out``, the window's settings, ``seed`` (accepted; the map is
    deterministic).
    """
    params = dict(params)
    options.reject_unknown("gradcam", params, CAM_PARAMS)
    network, window = options.split_model(model)
    window = options.check_window(options.pop_window(params, window), image)
    aggregation = options.check_aggregation(params.get("aggregation", "sum"))
    options.check_seed(params.get("seed", 0))
    mask = None if params.get("mask") is None else options.check_mask(params["mask"], image)
    out = check_out(params.get("out"))
    classes = options.check_classes(classes)
    layers = resolve_layers(hookable(network), params.get("layer"))
    frames = call_frames(hookable(network))
    device = resolve_device(params.get("device", "auto"))
    with placed(network, device) as model_dtype, torch.inference_mode(False):
        dtype = model_dtype or image.dtype
        x = image.detach().to(device=device, dtype=dtype, copy=True)
        labels = None if mask is None else mask.to(device)
        if labels is None and window is not None:
            labels = predict_logits(network, x, window).argmax(0).to(device)

        def new_sink(k: int):
            return open_sink((k, *x.shape[1:]), x.dtype, image.dtype, device, out)

        with torch.enable_grad(), captured(network, layers, frames) as run:  # network: a module or a Segmenter
            if window is None:
                sink = _whole_volume(run, x, labels, classes, aggregation, new_sink)
            else:
                sink = _windows(run, x, labels, classes, aggregation, window.geometry(x.shape[1:]), new_sink)
    return sink.result(image.dtype)


@contextmanager
def captured(network, layers: list[tuple[str, torch.nn.Module]], frames: list[tuple[int, ...]] = ((),)) -> Iterator[Run]:
    """A ``run(inputs)`` that also returns the target layers' outputs and the dims each call flipped
    (forward hooks, removed on exit). Each layer must run ``len(frames)`` times per forward pass."""
    calls: list[tuple[int, torch.Tensor]] = []  # (layer index, output) in call order

    def keeper(index: int):
        return lambda module, inputs, output: calls.append((index, output))

    handles = [module.register_forward_hook(keeper(i)) for i, (_, module) in enumerate(layers)]
    names = [name for name, _ in layers]

    def run(inputs: torch.Tensor) -> tuple[torch.Tensor, Calls]:
        calls.clear()
        logits = checked_forward(network, inputs)
        counts = [sum(1 for i, _ in calls if i == j) for j in range(len(layers))]
        if not calls:
            raise InputError("layer", f"{', '.join(names)} never ran in a forward pass: name a layer on the path to the logits")
        if any(n != len(frames) for n in counts):
            raise InputError("layer", f"{', '.join(names)} ran {'/'.join(map(str, counts))} time(s) in one forward pass, "
                                      f"expected {len(frames)} (a shared module?): name another layer")
        seen = [0] * len(layers)
        activations, flips = [], []
        for j, output in calls:
            if not isinstance(output, torch.Tensor) or output.dim() != inputs.dim() or output.shape[0] != inputs.shape[0]:
                got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise InputError("layer", f"{names[j]} gives {got}, not feature maps [B, C, X, Y, Z]: name another layer")
            activations.append(output)
            flips.append(frames[seen[j]])
            seen[j] += 1
        return logits, (activations, flips)

    try:
        yield run
    finally:
        for handle in handles:
            handle.remove()
        calls.clear()


def seg_grad_cam(activations: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], size: Sequence[int],
                 flips: Sequence[tuple[int, ...]] | None = None) -> torch.Tensor:
    """``[b, *size]`` = upsample(ReLU(Σ_calls Σ_k α_k A^k)), ``α_k`` = spatial mean of the gradient; a call
    on a mirrored copy (``flips``: its flipped dims) has its weighted map flipped back first."""
    flips = flips or [()] * len(activations)
    with torch.no_grad():
        weighted = [(g.mean(dim=tuple(range(2, g.dim())), keepdim=True) * a.detach()).sum(1, keepdim=True)
                    for a, g in zip(activations, grads)]
        weighted = [torch.flip(w, dims) if dims else w for w, dims in zip(weighted, flips)]
        if any(w.shape != weighted[0].shape for w in weighted):
            raise InputError("layer", f"the named layers' feature maps differ in grid ({[list(w.shape[2:]) for w in weighted]}): "
                                      "name layers of one resolution")
        cam = F.relu(torch.stack(weighted).sum(0))
        if tuple(cam.shape[2:]) != tuple(size):
            cam = F.interpolate(cam, size=tuple(size), mode="trilinear", align_corners=False)
        return cam[:, 0]


def _class_maps(logits: torch.Tensor, layer_calls: Calls, targets: Targets, rows: list[int],
                cotangent_of: Callable[[int], torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(row, [b, *roi] map)`` per class row: one backward pass each, sharing the forward graph."""
    activations, flips = layer_calls
    cotangent = torch.zeros_like(logits)
    for t, j in enumerate(rows):
        c = targets.classes[j]
        cotangent[:, c] = cotangent_of(j)
        grads = torch.autograd.grad(logits, activations, cotangent, retain_graph=t < len(rows) - 1, allow_unused=True)
        cotangent[:, c] = 0
        if any(g is None for g in grads):
            raise InputError("layer", "the named layer does not reach the output logits: name a layer on their path")
        yield j, seg_grad_cam(activations, grads, logits.shape[2:], flips)


def _whole_volume(run: Run, x: torch.Tensor, labels: torch.Tensor | None, classes: list[int] | None,
                  aggregation: str, new_sink):
    """One network call on the whole volume (its own forward pass gives the mask when none is given)."""
    inputs = x[None].requires_grad_(True)  # a graph to the layer even when the weights are frozen
    logits, layer_calls = run(inputs)
    labels = logits[0].detach().argmax(0) if labels is None else labels
    targets = Targets.build(labels, classes, logits.shape[1], aggregation)
    sink = new_sink(len(targets.classes))
    rows = targets.active
    for j, cam in _class_maps(logits, layer_calls, targets, rows, lambda j: targets.weight(j, dtype=logits.dtype)[None]):
        sink.add(j, (), cam[0])
    return sink


def _windows(run: Run, x: torch.Tensor, labels: torch.Tensor, classes: list[int] | None, aggregation: str,
             geometry: WindowGeometry, new_sink):
    """Window by window, ``sw_batch_size`` at a time; window maps added on the image grid."""
    padded_labels = pad_labels(labels, geometry)
    windows = list(geometry.slices)
    padded = geometry.pad(x[None])
    importance = geometry.importance(x.device, x.dtype)
    inv_count = geometry.count(x.device, x.dtype).reciprocal_()
    targets = sink = presence = None
    size = geometry.spec.sw_batch_size
    for ids in (list(range(i, min(i + size, len(windows)))) for i in range(0, len(windows), size)):
        if presence is not None and not bool(presence[ids].any()):
            continue  # no explained class in these windows: their maps would be zero
        group = [windows[i] for i in ids]
        inputs = torch.cat([padded[(slice(None), slice(None), *s)] for s in group]).requires_grad_(True)
        logits, layer_calls = run(inputs)
        if targets is None:
            targets = Targets.build(padded_labels, classes, logits.shape[1], aggregation)
            presence = targets.presence(windows, logits.shape[1])
            sink = new_sink(len(targets.classes))
        blend = torch.stack([importance * inv_count[s] for s in group])
        here = presence[ids]

        def cotangent_of(j: int, group=group, blend=blend, here=here) -> torch.Tensor:
            masks = [targets.weight(j, s, blend.dtype) if h else blend.new_zeros(blend.shape[1:])
                     for s, h in zip(group, here[:, j].tolist())]
            return blend * torch.stack(masks)

        rows = [j for j in targets.active if bool(here[:, j].any())]
        for j, cams in _class_maps(logits, layer_calls, targets, rows, cotangent_of):
            for cam, s, present in zip(cams, group, here[:, j].tolist()):
                if present:
                    box, inside = _crop(geometry, s, cam)
                    sink.add(j, box, inside)
        sink.release()
    return sink  # the first batch always runs, so the sink exists


def _crop(geometry: WindowGeometry, box: tuple[slice, ...], cam: torch.Tensor) -> tuple[tuple[slice, ...], torch.Tensor]:
    """A window's map on the padded grid, cut to the image: ``(box on the image grid, map there)``."""
    image_box, local = [], []
    for span, before, extent in zip(box, geometry.pad_before, geometry.shape):
        start, stop = max(span.start - before, 0), min(span.stop - before, extent)
        image_box.append(slice(start, stop))
        local.append(slice(start - (span.start - before), stop - (span.start - before)))
    return tuple(image_box), cam[tuple(local)]
