"""Cascading model-parameter randomisation (Adebayo et al. 2018; efficient MPRT, Hedström et al. 2024).

The network's layers are re-initialised one after another from the output towards the input, each
with its own initialiser (``reset_parameters``), on a deep copy: the trained model is never touched.
Quantus randomises a torch model by walking ``named_modules()`` in reverse registration order; here
the order is the order in which a forward pass first *runs* each layer (forward hooks), so networks
that register their decoder before their encoder, nnU-Net's fold ensembles (the same layer of every
fold is one step) and bundles all cascade from the output layer. Layers that never run (nnU-Net's
deep-supervision heads when deep supervision is off) are randomised with the output layer and
recorded; normalisation layers are steps of their own (their initialiser resets the affine
parameters and running statistics), or kept trained with ``normalisation="keep"`` (recorded).
Each layer is re-drawn under its own seed (``seed`` and its position), so the cascade is nested:
the layers randomised at depth k are identical at every deeper step.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch

from agg2exp_core.errors import InputError

NORMALISATION = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
NORMALISATION_MODES = ("reset", "keep")
_FOLD_PREFIX = re.compile(r"(^|\.)folds\.\d+(\.|$)")  # NnUNetNetwork's fold ensemble


@dataclass(frozen=True)
class Layer:
    """One step of the cascade: a layer key and the modules re-initialised with it."""

    name: str
    modules: tuple[str, ...]
    kind: str                    # "layer", "normalisation" or "unused" (never run; randomised at step 1)
    unused: tuple[str, ...] = ()  # modules that never run, randomised with this step (deep-supervision heads)


def _own_state(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(
        b is not None for b in module.buffers(recurse=False))


def layer_key(name: str) -> str:
    """The module name without nnU-Net's fold index: one step randomises that layer in every fold."""
    return _FOLD_PREFIX.sub(r"\1", name).strip(".") or name


def candidate_modules(network: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Modules with parameters or buffers of their own (the units the cascade re-initialises)."""
    return {name: m for name, m in network.named_modules() if name and _own_state(m)}


def execution_order(network: torch.nn.Module, example: torch.Tensor) -> list[str]:
    """Candidate module names in the order a forward pass of ``example`` first runs them."""
    seen: list[str] = []
    handles = [m.register_forward_hook(lambda mod, args, out, n=name: seen.append(n) if n not in seen else None)
               for name, m in candidate_modules(network).items()]
    try:
        with torch.no_grad():
            network(example)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def cascade_layers(network: torch.nn.Module, example: torch.Tensor,
                   normalisation: str = "reset") -> list[Layer]:
    """The cascade's steps, output layer first; unused modules join the first step."""
    if normalisation not in NORMALISATION_MODES:
        raise InputError("normalisation", f"must be one of {', '.join(NORMALISATION_MODES)}")
    modules = candidate_modules(network)
    if not modules:
        raise InputError("model", "has no parameters to randomise")
    if isinstance(network, torch.jit.ScriptModule):
        raise InputError("model", "a TorchScript archive has no layer initialisers: randomisation needs the "
                                  "network's Python modules (a checkpoint, state dict, bundle or nnU-Net folder)")
    ran = execution_order(network, example)
    groups: dict[str, list[str]] = {}
    for name in reversed(ran):
        groups.setdefault(layer_key(name), []).append(name)
    unused = tuple(n for n in modules if n not in ran)
    layers = []
    for key, names in groups.items():
        norm = all(isinstance(modules[n], NORMALISATION) for n in names)
        if norm and normalisation == "keep":
            continue
        layers.append(Layer(key, tuple(sorted(names)), "normalisation" if norm else "layer"))
    if not layers:
        raise InputError("model", "no layer of the network runs on the example input")
    first = layers[0]
    layers[0] = Layer(first.name, first.modules, first.kind, unused)
    return layers


def _reinitialise(module: torch.nn.Module) -> None:
    """The module's own initialiser; without one, each parameter re-drawn from a normal of its trained
    standard deviation (e.g. SwinUNETR's position tables), buffers left as they are."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            std = float(param.detach().float().std()) if param.numel() > 1 else 1.0
            param.normal_(0.0, std or 1.0)


@dataclass
class Cascade:
    """Randomised copies of ``network`` at cascading depths (``depth`` = layers re-initialised).

    ``randomised(depth)`` returns the working copy (eval mode, same device) with the first ``depth``
    layers of ``layers`` re-initialised; depths asked in increasing order cost one deep copy in all.
    """

    network: torch.nn.Module
    layers: list[Layer]
    seed: int = 0
    _copy: torch.nn.Module | None = field(default=None, repr=False)
    _depth: int = 0

    @classmethod
    def of(cls, network: torch.nn.Module, example: torch.Tensor, seed: int = 0,
           normalisation: str = "reset") -> "Cascade":
        return cls(network, cascade_layers(network, example, normalisation), seed)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def randomised(self, depth: int) -> torch.nn.Module:
        if not 0 <= depth <= self.n_layers:
            raise InputError("steps", f"depth {depth} outside 0..{self.n_layers}")
        if self._copy is None or depth < self._depth:
            self._copy, self._depth = copy.deepcopy(self.network).eval(), 0
        modules = dict(self._copy.named_modules())
        for position in range(self._depth, depth):
            layer = self.layers[position]
            with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
                torch.manual_seed(self.seed * 1_000_003 + position)
                for name in layer.modules + layer.unused:
                    _reinitialise(modules[name])
        self._depth = depth
        return self._copy


def cascade_depths(n_layers: int, steps: int) -> list[int]:
    """``steps`` depths from the output layer (1) evenly towards the input, then the full randomisation."""
    if steps < 0:
        raise InputError("steps", "must be 0 or more")
    if steps == 0 or n_layers == 1:
        return [n_layers]
    spaced = torch.linspace(1, n_layers, steps + 1).round().long().tolist()
    return sorted(set(int(d) for d in spaced) | {n_layers})
