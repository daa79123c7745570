"""Causal effects of network components: the same intervention on internal activations.

A component is a module of the network (a block) or one output channel of a chosen
block. Ablating it replaces its output, by a forward hook, with what it outputs on donor
content at the same window: ``ablation="mean"`` the mean of that activation over the
donors (deterministic), ``ablation="donor"`` each donor's activation in turn (Monte-Carlo,
with a standard error). For class ``c``::

    ATE[c, b] = f̂_c(x) - f̂_c(x with component b ablated),

``f̂_c`` the aggregated class logit over the clean predicted mask (fixed). The fused logit
of MONAI's sliding window is ``Σ_w imp_w y_w / count``, so ``f̂_c`` is a sum of per-window
terms ``Σ_v imp_w(v)/count(v) [mask(v)=c] y_{w,c}(v)``: every window is processed once per
ablation and only these per-class sums are kept (no fused volume per component).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from agg2exp_core.attribution import options
from agg2exp_core.attribution.causal.donors import donor_set
from agg2exp_core.errors import InputError
from agg2exp_core.models.devices import model_device, model_dtype
from agg2exp_core.models.inference import WindowSpec, predict_logits

ABLATIONS = ("mean", "donor")
MONAI_BLOCKS = "monai.networks.blocks"


@dataclass
class ComponentEffects:
    """``ate``, ``se``: ``[C, B]`` per class and component; ``components``: ``B`` names
    (``module`` or ``module[channel]``); ``n``: donors behind each ablation."""

    ate: np.ndarray
    se: np.ndarray
    n: int
    components: list[str]
    classes: list[int]
    v_clean: np.ndarray
    ablation: str
    seconds: float = 0.0


@dataclass(frozen=True)
class _Component:
    name: str
    module: torch.nn.Module
    channel: int | None = None


def default_blocks(network: torch.nn.Module) -> list[str]:
    """The network's blocks: the outermost MONAI blocks (UNet levels, SwinUNETR stages), else
    the children of the first module with more than one child."""
    found: list[str] = []
    for name, module in network.named_modules():
        if name and type(module).__module__.startswith(MONAI_BLOCKS) \
                and not any(name.startswith(p + ".") for p in found):
            found.append(name)
    if found:
        return found
    prefix, module = "", network
    children = list(module.named_children())
    while len(children) == 1:
        prefix, module = f"{prefix}{children[0][0]}.", children[0][1]
        children = list(module.named_children())
    return [f"{prefix}{name}" for name, _ in children]


def resolve_components(network: torch.nn.Module, components="blocks", channels_of: str | None = None,
                       probe: torch.Tensor | None = None) -> list[_Component]:
    """Components by name (``"blocks"`` = :func:`default_blocks`), or every channel of one block
    (counted on the network input ``probe`` unless the module names its ``out_channels``)."""
    modules = dict(network.named_modules())
    if channels_of is not None:
        if channels_of not in modules:
            raise InputError("channels_of", f"no module '{channels_of}' in the network")
        n = _output_channels(network, modules[channels_of], probe)
        return [_Component(f"{channels_of}[{j}]", modules[channels_of], j) for j in range(n)]
    names = default_blocks(network) if components == "blocks" else components
    if isinstance(names, str) or not names:
        raise InputError("components", f"expected 'blocks' or a list of module names, got {components!r}")
    missing = [n for n in names if n not in modules or not n]
    if missing:
        raise InputError("components", f"no module '{missing[0]}' in the network")
    return [_Component(n, modules[n]) for n in names]


def component_effects(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None, *,
                      components="blocks", channels_of: str | None = None, ablation: str = "mean",
                      donor: str = "constant", donors: Sequence | None = None, baseline=None,
                      n_samples: int = 20, seed: int | None = 0, mask=None, aggregation: str = "sum",
                      **window_params) -> ComponentEffects:
    """ATE of ablating each component on each class's f̂_c (see module docstring).

    ``donor``/``donors``/``baseline`` as for :func:`~agg2exp_core.attribution.causal.causal_explain`
    (a constant donor is the constant volume); at most ``n_samples`` donor images, in a seeded order.
    """
    start = time.perf_counter()
    image = options.check_image(image).detach().cpu()
    network, window = options.split_model(model)
    window = options.check_window(options.pop_window(dict(window_params), window), image)
    unknown = sorted(set(window_params) - set(options.WINDOW_KEYS) - {"window", "device"})
    if unknown:
        raise InputError("components", f"unknown parameter(s) {', '.join(unknown)}")
    if ablation not in ABLATIONS:
        raise InputError("ablation", f"unknown ablation '{ablation}' (use {', '.join(ABLATIONS)})")
    options.check_aggregation(aggregation)
    if not isinstance(network, torch.nn.Module):
        raise InputError("model", "component effects need a torch.nn.Module (forward hooks)")
    mask = options.check_mask(mask, image) if mask is not None else predict_logits(network, image, window).argmax(0)
    n_classes = int(mask.max()) + 1
    classes = list(range(n_classes)) if classes is None else (options.check_classes(classes) or [])
    baseline = options.default_baseline(model, image) if baseline is None else baseline  # the model's air
    volumes = _donor_volumes(image, donor, donors, baseline, n_samples, seed)
    windows = _Windows(network, image, mask, classes, window)
    x_pad, donors_pad = windows.padded(image[0]), [windows.padded(v) for v in volumes]
    parts = resolve_components(network, components, channels_of, windows.patch(x_pad, 0))
    clean = np.zeros(len(classes))
    ablated = np.zeros((len(parts), len(volumes) if ablation == "donor" else 1, len(classes)))
    for w in range(windows.count):
        x = windows.patch(x_pad, w)
        clean += windows.terms(w, _forward(network, x))
        acts = [_capture(network, parts, windows.patch(v, w)) for v in donors_pad]
        for b, part in enumerate(parts):
            stack = torch.stack([a[b] for a in acts])
            for k, act in enumerate(stack.mean(dim=0, keepdim=True) if ablation == "mean" else stack):
                with _replaced(part, act):
                    ablated[b, k] += windows.terms(w, _forward(network, x))
    scale = windows.mean_scale(aggregation)
    diffs = (clean[None, None] - ablated) * scale  # [B, K, C]
    ate = diffs.mean(axis=1).T
    if ablation == "donor" and len(volumes) > 1:
        se = (diffs.std(axis=1, ddof=1) / math.sqrt(len(volumes))).T
    else:
        se = np.zeros_like(ate) if ablation == "mean" or donor != "images" else np.full_like(ate, np.nan)
    return ComponentEffects(ate, se, len(volumes), [p.name for p in parts], classes, clean * scale, ablation,
                            time.perf_counter() - start)


def _donor_volumes(image, donor, donors, baseline, n_samples, seed) -> list[torch.Tensor]:
    pool = donor_set(image, donor, donors, baseline)
    shape = tuple(image.shape[1:])
    chosen = pool.order(seed, -1)[:options.positive_int("n_samples", n_samples)]
    return [pool.volumes[int(k)].float().expand(shape).contiguous() for k in chosen]


class _Windows:
    """MONAI's window grid of one volume and each window's per-class weights ``imp/count [mask=c]``."""

    def __init__(self, network, image: torch.Tensor, mask: torch.Tensor, classes: list[int],
                 window: WindowSpec | None):
        self.device, self.dtype = model_device(network), model_dtype(network)
        self.window, self.classes = window, classes
        self.mask = mask
        if window is None:
            self.slices = [tuple(slice(0, s) for s in mask.shape)]
            self.weight = torch.ones(mask.shape, dtype=torch.float64)
            self.mask_pad = mask
            return
        self.geometry = window.geometry(mask.shape)
        self.slices = list(self.geometry.slices)
        self.weight = self.geometry.importance("cpu", torch.float64)
        self.count_map = self.geometry.count("cpu", torch.float64)
        self.mask_pad = F.pad(mask[None, None].double(), self.geometry.torch_pad, value=-1.0)[0, 0].long()

    @property
    def count(self) -> int:
        return len(self.slices)

    def padded(self, volume: torch.Tensor) -> torch.Tensor:
        """A volume ``[*S]`` padded as MONAI pads the network input."""
        volume = volume.float()
        return volume if self.window is None else self.geometry.pad(volume[None, None])[0, 0]

    def patch(self, padded: torch.Tensor, w: int) -> torch.Tensor:
        """Network input ``[1, 1, *roi]`` of window ``w`` of a padded volume."""
        return padded[self.slices[w]][None, None].to(self.device, self.dtype)

    def terms(self, w: int, logits: torch.Tensor) -> np.ndarray:
        """This window's share of ``f̂_c`` for every class: ``[C]``."""
        sl = self.slices[w]
        weight = self.weight if self.window is None else self.weight / self.count_map[sl]
        labels = self.mask_pad[sl]
        y = logits[0].detach().cpu().double()
        return np.array([float((y[c] * weight * (labels == c)).sum()) for c in self.classes])

    def mean_scale(self, aggregation: str) -> np.ndarray:
        if aggregation == "sum":
            return np.ones(len(self.classes))
        return np.array([1.0 / max(int((self.mask == c).sum()), 1) for c in self.classes])


def _forward(network, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network(x)


def _capture(network, parts: list[_Component], x: torch.Tensor) -> list[torch.Tensor]:
    """Every component's output on one input (one forward pass)."""
    seen: dict[int, torch.Tensor] = {}
    modules = {id(p.module): p.module for p in parts}
    handles = [m.register_forward_hook(_recorder(seen, key)) for key, m in modules.items()]
    try:
        _forward(network, x)
    finally:
        for h in handles:
            h.remove()
    return [seen[id(p.module)] if p.channel is None else seen[id(p.module)][:, p.channel] for p in parts]


def _recorder(store: dict, key: int):
    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise InputError("components", f"{type(module).__name__} returns {type(output).__name__}, not a tensor")
        store.setdefault(key, output.detach().clone())
    return hook


@contextmanager
def _replaced(part: _Component, activation: torch.Tensor) -> Iterator[None]:
    """The component's output (or one channel of it) replaced by ``activation`` while inside."""
    def hook(module, inputs, output):
        if part.channel is None:
            return activation.to(output.dtype)
        out = output.clone()
        out[:, part.channel] = activation.to(output.dtype)
        return out
    handle = part.module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _output_channels(network, module: torch.nn.Module, probe: torch.Tensor | None) -> int:
    """Output channels of a module: its ``out_channels``, else measured on ``probe``."""
    n = getattr(module, "out_channels", None)
    if isinstance(n, int):
        return n
    if probe is None:
        raise InputError("channels_of", "cannot tell how many channels the module outputs")
    seen: dict[int, torch.Tensor] = {}
    handle = module.register_forward_hook(_recorder(seen, 0))
    try:
        _forward(network, probe)
    finally:
        handle.remove()
    return int(seen[0].shape[1])
