"""The KernelSHAP game of one image (efficient-KernelSHAP paper, Sec. III).

Players are the units of a partition (``attribution.partitions``); a coalition
``m in {0,1}^M`` keeps the units with ``m_j = 1`` and sets every voxel of a removed unit to
``baseline`` (default: the model's air, -1024 HU in its intensity space; 0.0 for a plain
callable, the [0, 1]-window's air). A value function
(``values.py``) turns the logits of the perturbed image into one number per class. Only
the ROI's bounding box is read, and only voxels within its receptive-field support are
perturbed (units outside are null players, value 0).

Parameters come in three groups: ``UnitSpec`` (the players), ``ValueSpec`` (the value
function and its ROI) and ``EngineSpec`` (how logits are computed), collected in a
``GameConfig``; ``GameConfig.from_params`` reads the flat names of ``explain``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import numpy as np
import torch

from agg2exp_core.attribution import options
from agg2exp_core.attribution.kernelshap.boxes import Box, bounding_box, dilate_box
from agg2exp_core.attribution.kernelshap.engines import DirectEngine, EngineStats, SlidingWindowEngine
from agg2exp_core.attribution.kernelshap.values import VALUES, coalition_values, default_rois
from agg2exp_core.attribution.partitions import DEFAULT_SCALE_MM, make_partition, relabel
from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import Window, predict_logits
from agg2exp_core.models.segmenter import Segmenter


@dataclass(frozen=True)
class UnitSpec:
    """The players: a partition name (``cubes``, ``semantic``, ``fcc``, ``hybrid``) and its
    parameters (:func:`~agg2exp_core.attribution.partitions.make_partition`), or an integer
    label map ``[*S]`` of units (-1: voxels that belong to no unit)."""

    partition: str | np.ndarray = "semantic"
    labels: np.ndarray | None = None       # organ map for semantic/hybrid (default: the prediction)
    spacing: Sequence[float] = (1.0, 1.0, 1.0)
    n_per_axis: int | Sequence[int] = 4
    scale_mm: float = DEFAULT_SCALE_MM
    offset_mm: Sequence[float] | None = None
    exclude_labels: Sequence[int] = ()

    def build(self, shape: tuple[int, ...], prediction: np.ndarray) -> np.ndarray:
        if isinstance(self.partition, str):
            labels = prediction if self.labels is None else self.labels
            return make_partition(self.partition, shape, self.spacing, labels=labels, n_per_axis=self.n_per_axis,
                                  scale_mm=self.scale_mm, offset_mm=self.offset_mm,
                                  exclude_labels=self.exclude_labels)
        units = np.asarray(self.partition.cpu() if torch.is_tensor(self.partition) else self.partition)
        if units.shape != shape or not np.issubdtype(units.dtype, np.integer):
            raise InputError("partition", f"a label map must be integer with shape {shape}, got {units.dtype} {units.shape}")
        return units.astype(np.int64)


@dataclass(frozen=True)
class ValueSpec:
    """The value function (``logit``, ``tp``, ``fp``, ``dice``, ``softdice``), the aggregation of
    ``logit`` (``sum`` | ``mean``) and its ROI (default: see ``values.default_rois``)."""

    value: str = "logit"
    aggregation: str = "sum"
    roi: np.ndarray | None = None
    roi_margin: int = 3

    def __post_init__(self):
        if self.value not in VALUES:
            raise InputError("value", f"unknown value function '{self.value}' (use {', '.join(VALUES)})")
        options.check_aggregation(self.aggregation)


@dataclass(frozen=True)
class EngineSpec:
    """How logits of perturbed inputs are computed: ``window`` (the model's sliding window,
    MONAI's or nnU-Net's; None = the network on the whole volume), ``inference`` (``cached`` | ``roi`` | ``full``),
    ``cache_mb`` for memoised patch logits, ``batch_size`` coalitions per engine call
    (default 4 whole volumes, or 16 with a window, whose patches are streamed) and
    ``receptive_field`` (voxels by which the ROI box is dilated to get the perturbable box;
    default: a window's exact support, or the whole volume; a direct model then sees only
    that crop)."""

    window: Window | None = None
    inference: str = "cached"
    cache_mb: float = 1024.0
    batch_size: int | None = None
    receptive_field: int | Sequence[int] | None = None

    @property
    def coalitions_per_call(self) -> int:
        if self.batch_size is not None:
            return options.positive_int("batch_size", self.batch_size)
        return 4 if self.window is None else 16


@dataclass(frozen=True)
class GameConfig:
    units: UnitSpec = field(default_factory=UnitSpec)
    value: ValueSpec = field(default_factory=ValueSpec)
    engine: EngineSpec = field(default_factory=EngineSpec)
    baseline: float | np.ndarray | None = None  # value of removed voxels; None: the model's air
    mask: np.ndarray | None = None         # clean predicted label map [*S]; skips the clean pass

    @classmethod
    def from_params(cls, params: dict, window: Window | None = None) -> "GameConfig":
        """Split the flat parameter names of ``explain`` into the groups (unknown names raise)."""
        params = dict(params)
        params.pop("device", None)  # inputs go to the device of the model's parameters
        window = options.pop_window(params, window)
        groups = {}
        for name, spec in (("units", UnitSpec), ("value", ValueSpec), ("engine", EngineSpec)):
            groups[name] = spec(**{f.name: params.pop(f.name) for f in fields(spec) if f.name in params},
                                **({"window": window} if spec is EngineSpec else {}))
        top = {k: params.pop(k) for k in ("baseline", "mask") if k in params}
        if params:
            raise InputError("kernelshap", f"unknown parameter(s) {', '.join(sorted(params))}")
        mask = top.get("mask")
        if mask is not None:
            top["mask"] = np.asarray(mask.cpu() if torch.is_tensor(mask) else mask)
        return cls(**groups, **top)


GAME_PARAMS = tuple(f.name for spec in (UnitSpec, ValueSpec, EngineSpec) for f in fields(spec)) + \
    ("baseline", "mask", "device", *options.WINDOW_KEYS)


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
    aggregation: str
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
                                            self.value, self.aggregation))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)))


def build_game(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None,
               config: GameConfig | None = None, **params) -> UnitGame:
    """Set up the unit game of one image.

    ``model``: a ``Segmenter`` (its network and window) or a callable ``[B,1,*S] -> [B,l,*S]``.
    ``config`` or the flat parameters of :func:`~agg2exp_core.attribution.kernelshap.kernelshap_explain`.
    """
    network, window = options.split_model(model)
    config = config or GameConfig.from_params(params, window)
    image = options.check_image(image).detach().cpu()
    options.check_window(config.engine.window, image)
    shape = tuple(image.shape[1:])
    engine_spec, value = config.engine, config.value
    if config.mask is None:
        logits = predict_logits(network, image, engine_spec.window)
        prediction, n_classes = logits.argmax(dim=0).numpy(), int(logits.shape[0])
    else:
        prediction, n_classes = config.mask, _class_count(model, value.roi, prediction_shape=config.mask.shape)
    # With only a mask and a plain callable the count is unknown until the clean logits below:
    # a class above the mask's largest label is absent, its ROI empty, so the box is the same.
    counted = classes is not None or n_classes is not None
    if classes is None:
        classes = list(range(n_classes if n_classes is not None else int(prediction.max()) + 1))
    classes = [int(c) for c in classes]
    rois_full = _class_rois(prediction, classes, value)
    units = config.units.build(shape, prediction)
    out_box = bounding_box(rois_full.any(axis=0)) if classes else None
    per_call = engine_spec.coalitions_per_call
    if out_box is None:
        if not counted:  # nothing to perturb, no clean logits: one pass tells the class count
            classes = list(range(int(predict_logits(network, image, engine_spec.window).shape[0])))
        return UnitGame(None, classes, np.full(shape, -1, np.int64), np.zeros(0, np.int64), prediction,
                        torch.zeros(0), torch.zeros(0), value.value, value.aggregation, None, None, per_call)
    region = _perturbable_box(out_box, shape, engine_spec)
    eff, unit_ids = _effective_units(units, region)
    baseline = options.default_baseline(model, image) if config.baseline is None else config.baseline
    if engine_spec.window is None:
        crop = region if engine_spec.receptive_field is not None else None
        engine = DirectEngine(network, image, eff, baseline, out_box, crop, per_call)
    else:
        engine = SlidingWindowEngine(network, image, eff, baseline, out_box, engine_spec.window,
                                     engine_spec.inference, per_call, engine_spec.cache_mb)
    rois = torch.as_tensor(rois_full[(slice(None), *out_box)])
    game = UnitGame(engine, classes, eff, unit_ids, prediction, rois, torch.zeros(0), value.value,
                    value.aggregation, out_box, region, per_call)
    clean = engine.logits(np.ones((1, len(unit_ids)), bool))
    game.p0 = clean[0].argmax(dim=0)  # P0: the game's own unperturbed prediction
    game.clean_logits = clean
    if not counted and clean.shape[1] > len(classes):  # the classes absent from the mask, as the contract says
        game.classes = list(range(int(clean.shape[1])))
        game.rois = torch.as_tensor(_class_rois(prediction, game.classes, value)[(slice(None), *out_box)])
    return game


def _class_count(model, roi, prediction_shape) -> int | None:
    """The model's class count without a forward pass: a Segmenter's label names, or the
    rows of a per-class ROI; None when only the clean logits can tell."""
    if isinstance(model, Segmenter):
        return model.n_classes
    if roi is not None and np.ndim(roi) == len(prediction_shape) + 1:
        return int(np.shape(roi)[0])
    return None


def _class_rois(prediction: np.ndarray, classes: list[int], value: ValueSpec) -> np.ndarray:
    """The ROI ``[C, *S]`` of each class; the logit value reads only the predicted voxels."""
    rois = default_rois(prediction, classes, value.value, value.roi, value.roi_margin)
    if value.value == "logit" and classes:
        rois &= np.stack([prediction == c for c in classes])
    return rois


def _effective_units(units: np.ndarray, region: Box) -> tuple[np.ndarray, np.ndarray]:
    """Units inside the perturbable box renumbered ``0..M-1`` (-1 elsewhere), and their ids."""
    in_region = np.zeros(units.shape, bool)
    in_region[region] = True
    eff, unit_ids = relabel(np.where(in_region, units, -1))
    if unit_ids[0] == -1:  # relabel put -1 first
        eff, unit_ids = eff - 1, unit_ids[1:]
    return np.where(in_region, eff, -1), unit_ids


def _perturbable_box(out_box: Box, shape: tuple[int, ...], engine: EngineSpec) -> Box:
    """ROI box dilated by the receptive field; without one, a window's exact support (every
    window that overlaps the ROI box), or the whole volume for a direct model."""
    if engine.receptive_field is not None:
        return dilate_box(out_box, engine.receptive_field, shape)
    if engine.window is None:
        return tuple(slice(0, s) for s in shape)
    return engine.window.geometry(shape).support(out_box)
