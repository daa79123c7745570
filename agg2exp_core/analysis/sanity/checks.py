"""The sanity checks of one image: cascading randomisation, random logit, edge detector.

``run_sanity_checks`` returns the rows of the store's ``sanity_check`` table (without ``run_id``):

- ``mprt``: for every cascading depth ``step`` (layers re-initialised, output first; the last step is the
  fully randomised model, as in efficient MPRT) and class, the similarity (``metric``: Spearman of |a| and
  of signed a, SSIM of the central slice, rank correlation of the Agg2Exp rows) between the trained and the
  randomised model's maps. ``baseline``: the same similarity between the trained model's maps of two
  unrelated classes (mean over the other classes). ``passed``: similarity below the baseline; a class
  passes when it does so at the fully randomised step. Step 0 is the trained model itself.
- ``random_logit``: the similarity of a class's map to that of another class (chosen at random):
  explaining another logit must change the map and the row (passed below ``logit_threshold``).
- ``edge``: Spearman of |a| with the Sobel edge magnitude of the CT: a method that only draws edges
  fails (passed below ``edge_threshold``).

Every step explains the same scalar: the class's logits summed over the *trained* model's predicted
mask (``mask``), so that a randomised model that predicts nothing still has a map to compare.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from agg2exp_core.aggregate import local_matrices
from agg2exp_core.analysis.sanity import similarity
from agg2exp_core.analysis.sanity.randomisation import Cascade, cascade_depths
from agg2exp_core.attribution.registry import explain
from agg2exp_core.errors import InputError
from agg2exp_core.models import Segmenter
from agg2exp_core.vocabulary import SANITY_CHECKS

COLUMNS = ["case_id", "class_id", "check", "step", "layer", "metric", "value", "baseline", "passed"]
CHECKS = tuple(SANITY_CHECKS)


@dataclass(frozen=True)
class SanityConfig:
    steps: int = 3                # cascading depths before the fully randomised model
    seed: int = 0                 # re-initialisation, voxel sample and random-logit partner
    max_voxels: int = 200_000     # Spearman on a fixed voxel sample above this
    normalisation: str = "reset"  # or "keep": normalisation layers keep their trained parameters
    kind: str = "lift"            # Agg2Exp mass kind of the row correlation (volume-adjusted)
    logit_threshold: float = 0.9  # random logit: a map this alike to another class's is not class-specific
    edge_threshold: float = 0.5   # edge control: |a| ranked this like the CT's edges is an edge detector


Explainer = Callable[..., torch.Tensor]  # (model, image, classes=..., **params) -> [k, *S]


def _explainer(method: str | Explainer) -> Explainer:
    if callable(method):
        return method
    return lambda model, image, classes, **params: explain(model, image, method, classes=classes, **params)


def _network(model) -> torch.nn.Module:
    network = model.network if isinstance(model, Segmenter) else model
    if not isinstance(network, torch.nn.Module):
        raise InputError("model", "randomisation needs a torch module (a Segmenter or an nn.Module)")
    return network


def _with_network(model, network: torch.nn.Module):
    return dataclasses.replace(model, network=network) if isinstance(model, Segmenter) else network


def _prediction(model, image: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(trained label map ``[*S]``, number of classes)."""
    with torch.no_grad():
        logits = model.predict(image) if isinstance(model, Segmenter) else model(image[None])[0]
    return logits.argmax(0).cpu(), int(logits.shape[0])


def _example(model, image: torch.Tensor) -> torch.Tensor:
    """An input of the network's window size (execution order of its layers)."""
    roi = model.roi_size if isinstance(model, Segmenter) else None
    example = torch.zeros((1, 1, *roi), dtype=image.dtype) if roi else image[None]
    device = next(_network(model).parameters()).device
    return example.to(device)


@dataclass
class _Maps:
    """Attribution maps of the explained classes and their Agg2Exp rows."""

    maps: np.ndarray   # [k, *S]
    rows: np.ndarray   # [k, r]
    ranked: list       # [k] similarity.RankedMap


class _Context:
    def __init__(self, model, image, classes, method, params, config, rois, mask, n_classes, case_id):
        self.model, self.image, self.classes, self.case_id = model, image, list(classes), case_id
        self.explain, self.params, self.config = _explainer(method), params, config
        self.rois, self.mask, self.n_classes = rois, mask, n_classes
        self.sample = similarity.voxel_sample(image.shape[1:], config.max_voxels, config.seed)

    def maps(self, model, classes: Sequence[int]) -> _Maps:
        extra = {"device": model.device} if isinstance(model, Segmenter) else {}
        maps = self.explain(model, self.image, classes=list(classes), mask=self.mask, **extra, **self.params)
        maps = maps.detach().float().cpu().numpy()
        rows = np.stack([local_matrices(maps[j:j + 1], self.mask, self.n_classes, self.rois)[self.config.kind][0]
                         for j in range(len(classes))])
        return _Maps(maps, rows, [similarity.RankedMap(m, self.sample) for m in maps])

    def compare(self, a: _Maps, i: int, b: _Maps, j: int) -> dict[str, float]:
        out = similarity.voxel_similarity(a.ranked[i], b.ranked[j])
        out[similarity.ROW_METRIC] = similarity.spearman(a.rows[i], b.rows[j])
        return out


def _partners(classes: list[int], n_classes: int) -> list[int]:
    """Classes to compare with (the others explained; one more class of the model if only one is)."""
    if len(classes) > 1:
        return []
    spare = [c for c in range(n_classes) if c not in classes]
    if not spare:
        raise InputError("classes", "the sanity checks need a model with at least two classes")
    return spare[:1]


def _verdict(value: float, baseline: float):
    return None if not (np.isfinite(value) and np.isfinite(baseline)) else bool(value < baseline)


def run_sanity_checks(model, image: torch.Tensor, classes: Sequence[int], method: str | Explainer,
                      params: dict | None = None, config: SanityConfig = SanityConfig(), *,
                      rois: dict[str, np.ndarray] | None = None, case_id: str = "",
                      mask: torch.Tensor | None = None) -> pd.DataFrame:
    """Rows of ``sanity_check`` (``COLUMNS``) for one image ``[1, *S]`` and the classes (channel ids).

    ``model``: a Segmenter or an ``nn.Module`` ``[B,1,*S] -> [B,l,*S]``; ``method``: a registered method
    name or an explainer ``(model, image, classes=..., **params) -> [k, *S]``; ``params`` the method's
    parameters; ``rois`` extra RoI masks (matrix columns); ``mask`` the predicted label map (default: the
    trained model's). ``frame.attrs``: ``layers`` (the cascade), ``seconds`` (trained map, all).
    """
    started = time.perf_counter()
    params = {k: v for k, v in (params or {}).items() if k != "mask"}
    network = _network(model)
    if mask is not None and isinstance(model, Segmenter):  # the caller's prediction: no second forward pass
        mask, n_classes = torch.as_tensor(mask).long(), model.n_classes
    else:
        predicted, n_classes = _prediction(model, image)
        mask = predicted if mask is None else torch.as_tensor(mask).long()
    classes = [int(c) for c in classes]
    if not classes or min(classes) < 0 or max(classes) >= n_classes:
        raise InputError("classes", f"expected class ids in 0..{n_classes - 1}, got {classes}")
    ctx = _Context(model, image, classes, method, params, config, rois, mask, n_classes, case_id)
    extra = _partners(classes, n_classes)
    trained = ctx.maps(model, classes + extra)
    trained_seconds = time.perf_counter() - started
    rows = _controls(ctx, trained, extra)
    baselines = _baselines(ctx, trained)
    cascade = Cascade.of(network, _example(model, image), config.seed, config.normalisation)
    for depth in [0] + cascade_depths(cascade.n_layers, config.steps):
        randomised = trained if depth == 0 else ctx.maps(_with_network(model, cascade.randomised(depth)), classes)
        layer = _layer_label(cascade, depth)
        for j, c in enumerate(classes):
            for metric, value in ctx.compare(trained, j, randomised, j).items():
                base = baselines[j][metric]
                rows.append([case_id, c, "mprt", depth, layer, metric, value, base,
                             None if depth == 0 else _verdict(value, base)])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["layers"] = cascade.layers
    frame.attrs["seconds"] = {"trained": trained_seconds, "total": time.perf_counter() - started}
    return frame


def _layer_label(cascade: Cascade, depth: int) -> str:
    """The layer randomised down to at ``depth`` (its kind and the unused heads randomised with it noted)."""
    if depth == 0:
        return ""
    layer = cascade.layers[depth - 1]
    note = " [normalisation]" if layer.kind == "normalisation" else ""
    unused = len(cascade.layers[0].unused)
    return f"{layer.name}{note}" + (f" (+{unused} unused modules)" if depth == 1 and unused else "")


def _baselines(ctx: _Context, trained: _Maps) -> list[dict[str, float]]:
    """Per explained class: the mean similarity of its trained map to the other classes' trained maps."""
    n = len(trained.maps)
    out = []
    for j in range(len(ctx.classes)):
        pairs = [ctx.compare(trained, j, trained, p) for p in range(n) if p != j]
        out.append({m: float(np.nanmean([p[m] for p in pairs])) if any(np.isfinite(p[m]) for p in pairs)
                    else float("nan") for m in similarity.METRICS})
    return out


def _controls(ctx: _Context, trained: _Maps, extra: list[int]) -> list[list]:
    """Random-logit rows (another class, drawn with the seed) and edge-detector rows, per class."""
    rng = np.random.default_rng(ctx.config.seed)
    edges = similarity.RankedMap(similarity.edge_magnitude(ctx.image[0].detach().float().cpu().numpy()),
                                 ctx.sample).abs_ranks
    rows = []
    n = len(trained.maps)
    for j, c in enumerate(ctx.classes):
        partner = int(rng.choice([p for p in range(n) if p != j]))
        for metric, value in ctx.compare(trained, j, trained, partner).items():
            rows.append([ctx.case_id, c, "random_logit", 0,
                         f"class {(ctx.classes + extra)[partner]}", metric, value, ctx.config.logit_threshold,
                         _verdict(value, ctx.config.logit_threshold)])
        value = similarity.rank_correlation(trained.ranked[j].abs_ranks, edges)
        rows.append([ctx.case_id, c, "edge", 0, "sobel", "spearman_abs", value, ctx.config.edge_threshold,
                     _verdict(value, ctx.config.edge_threshold)])
    return rows
