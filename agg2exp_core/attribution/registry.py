"""One registry of attribution methods: name, the parameters each accepts, and its explainer.

``explain`` (the contract of docs/CONTRACTS.md) dispatches here; precompute validates a run's
``--params`` against ``parameters(method)`` before it touches a case.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import torch

from agg2exp_core import vocabulary
from agg2exp_core.attribution import gradients, options
from agg2exp_core.attribution.causal import CAUSAL_PARAMS, causal_explain
from agg2exp_core.attribution.guided import GUIDED_PARAMS, check_guidable, guided_explain
from agg2exp_core.attribution.kernelshap import GAME_PARAMS, kernelshap_explain
from agg2exp_core.attribution.layer_cam import CAM_PARAMS, gradcam_explain
from agg2exp_core.attribution.target_layers import check_layer
from agg2exp_core.errors import InputError


@dataclass(frozen=True)
class Method:
    name: str
    parameters: tuple[str, ...]
    explain: Callable[..., torch.Tensor]  # (model, image, classes=None, **params) -> [k, *S]
    check_model: Callable[..., None] | None = None  # (model, params): model-specific checks before any case

    @property
    def title(self) -> str:
        return vocabulary.method_title(self.name)


def _gradient(name: str) -> Method:
    params = gradients.COMMON_PARAMS + gradients.METHOD_PARAMS[name]
    return Method(name, params, partial(gradients.explain_gradients, method=name))


METHODS: dict[str, Method] = {m.name: m for m in (
    _gradient("vg"), _gradient("smoothgrad"), _gradient("ig"),
    Method("kernelshap", GAME_PARAMS + ("n_coalitions", "seed"), kernelshap_explain),
    Method("causal", CAUSAL_PARAMS, causal_explain),
    Method("gradcam", CAM_PARAMS, gradcam_explain, check_layer),
    Method("guided_backprop", GUIDED_PARAMS, guided_explain, check_guidable),
)}
assert set(METHODS) == set(vocabulary.METHODS), "the registry and the vocabulary name the same methods"


def get_method(name) -> Method:
    """The registered method of a name (case-insensitive); an ``InputError`` otherwise."""
    key = name.lower() if isinstance(name, str) else name
    if key not in METHODS:
        raise InputError("method", f"unknown method {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[key]


def check_params(name: str, params: dict) -> None:
    """Reject parameter names a method does not take (before any work is done)."""
    options.reject_unknown(name, params, get_method(name).parameters)


def check_params_for_model(name: str, model, params: dict) -> None:
    """The checks of a method's parameters that need the loaded model (Seg-Grad-CAM's layer)."""
    check = get_method(name).check_model
    if check is not None:
        check(model, params)


def explain(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, method: str,
            classes: Sequence[int] | int | None = None, **params) -> torch.Tensor:
    """Attributions of every requested class's aggregated logit to every input voxel.

    Args:
        model: a ``Segmenter`` (explained through its own sliding window) or a callable
            ``[B,1,*S] -> [B,l,*S]`` of logits (an ``nn.Module`` is moved to ``device`` for
            the call and moved back; its parameters are left untouched). Use eval mode:
            samples are batched, so train-mode BatchNorm would mix them.
        image: ``[1,*S]`` floating-point tensor (3 spatial dims).
        method: ``"vg"``, ``"smoothgrad"``, ``"ig"``, ``"kernelshap"``, ``"causal"``, ``"gradcam"``
            (Seg-Grad-CAM) or ``"guided_backprop"`` (a negative control).
        classes: channel ids to explain (order kept); ``None`` = all ``l``.
        **params: common to all methods: ``mask`` (``[*S]`` predicted label map; skips the
            clean forward pass), ``aggregation`` (``"sum"`` | ``"mean"``), ``seed`` (0),
            ``device`` (``"auto"`` = CUDA when available), ``window`` (a ``WindowSpec`` or an
            ``NnUNetWindow``; a Segmenter brings its own) or its fields over the model's:
            ``roi_size`` / ``overlap`` (0.25) / ``sw_batch_size`` (1) / ``mode``
            (``"gaussian"``) / ``sigma_scale`` (0.125) / ``padding_mode`` / ``cval``
            (MONAI's sliding-window inference), ``tile_step_size`` (nnU-Net's);
            ``roi_size=None`` turns windows off.
            vg/smoothgrad/ig: ``batch_size`` (samples per forward pass, default 4),
            ``autocast`` (None; ``"bf16"``, or ``"fp16"`` on CUDA: lower-precision forward
            passes), ``out`` (a ``.npy`` path: accumulate there, memory-mapped, and keep it;
            results above ``attribution.sinks.STREAM_ABOVE_BYTES`` do so in a temporary file).
            smoothgrad: ``n_samples`` (20), ``sigma`` (0.1, times the image's value range).
            ig: ``steps`` (20), ``baseline`` (scalar or ``[1,*S]``/``[*S]`` tensor; default
            the model's air, ``Segmenter.air_value()`` = -1024 HU in its intensity space,
            0.0 for a plain callable),
            ``rule`` (``"gausslegendre"`` default, as Captum; or ``"riemann_middle"``,
            ``"riemann_trapezoid"``, ``"riemann_left"``, ``"riemann_right"`` = paper Eq. 5).
            kernelshap: see :func:`agg2exp_core.attribution.kernelshap.kernelshap_explain`.
            causal: see :func:`agg2exp_core.attribution.causal.causal_explain` (``partition``,
            ``donor``, ``donors``, ``baseline``, ``n_samples``, ``tolerance``, ``seed``, ...).
            gradcam: ``layer`` (module name(s); default per network), see
            :mod:`agg2exp_core.attribution.layer_cam`. guided_backprop: vg's parameters, see
            :mod:`agg2exp_core.attribution.guided`.

    Returns:
        ``[len(classes) or l, *S]`` attributions in ``image.dtype``, on CPU. A class with
        an empty mask gets zeros.

    Raises:
        InputError (a ValueError, one line): bad image, method, class or parameter.
    """
    chosen = get_method(method)
    return chosen.explain(model, options.check_image(image), classes=classes, **params)
