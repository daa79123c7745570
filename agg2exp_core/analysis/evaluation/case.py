"""All metrics of several attribution methods on one image (the rows of ``method_eval``).

Parameters come in groups (``FaithfulnessConfig``, ``SensitivityConfig``, ``CurveConfig``)
collected in an ``EvaluationConfig``; the metric names written are those of
``agg2exp_core.vocabulary.METRICS``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from agg2exp_core.analysis.evaluation.curves import (BASELINE_RANKINGS, baseline_scores, curve_metrics,
                                                     perturbation_curves_from_game, unit_scores)
from agg2exp_core.analysis.evaluation.metrics import (FAITHFULNESS_SUBSET, as_numpy, bootstrap_ci, clean_prediction,
                                                      complexity, faithfulness_drops, noisy_copies, pearson,
                                                      random_subsets, sensitivity_distances, subset_sums)
from agg2exp_core.attribution.kernelshap import build_game
from agg2exp_core.attribution.options import default_baseline, default_range
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import METRICS

DEFAULT_METRICS = ("faithfulness", "sensitivity", "complexity", "efficiency", "curves")
UNIT_METHODS = ("kernelshap", "causal")  # maps holding one value per supervoxel
METRIC_COLUMNS = ["method", "target_id", "metric", "value"]
CURVE_COLUMNS = ["method", "target_id", "ordering", "step", "fraction", "value"]


@dataclass(frozen=True)
class FaithfulnessConfig:
    n_subsets: int = 100
    subset_size: int = FAITHFULNESS_SUBSET
    max_fraction: float = 0.1
    n_bootstrap: int = 0              # > 0: also a bootstrap CI of the correlation


@dataclass(frozen=True)
class SensitivityConfig:
    n: int = 3
    lower_bound: float = 0.1
    noise: str = "uniform"
    denominator: str = "attribution"


@dataclass(frozen=True)
class CurveConfig:
    # not "semantic", the partition KernelSHAP and the causal method fit by default: a curve over
    # the units a method estimated on replays its own game (a constant-donor effect is its first step)
    partition: str | np.ndarray = "cubes"
    value: str = "logit"
    steps: int | None = None          # default: one unit per step
    game: Mapping = field(default_factory=dict)  # further build_game parameters


@dataclass(frozen=True)
class EvaluationConfig:
    metrics: Sequence[str] = DEFAULT_METRICS
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    sensitivity: SensitivityConfig = field(default_factory=SensitivityConfig)
    curves: CurveConfig = field(default_factory=CurveConfig)
    theta: float = 0.1                # complexity threshold
    baseline: float | None = None     # value of removed voxels (faithfulness, curves); None: the model's air
    seed: int | None = 0
    batch_size: int = 4

    def __post_init__(self):
        unknown = set(self.metrics) - set(DEFAULT_METRICS)
        if unknown:
            raise InputError("metrics", f"unknown metric(s) {', '.join(sorted(unknown))}")


def evaluate_case(model: Callable, image: torch.Tensor, methods: Mapping[str, Mapping],
                  classes: Sequence[int], config: EvaluationConfig = EvaluationConfig(),
                  explain: Callable | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All metrics of several attribution methods on one image.

    Args:
        model: a ``Segmenter`` (explained, perturbed and predicted through its window) or
            a callable ``[B, 1, *S] -> [B, l, *S]`` of whole-volume logits.
        image: ``[1, *S]`` scaled image.
        methods: display name -> explain parameters; ``params["method"]`` (default: the
            name) selects the method of ``explain``.
        classes: class ids (channels) to explain.
        config: which metrics and their settings.
        explain: ``explain(model, image, method=..., classes=..., **params) -> [C, *S]``;
            default :func:`agg2exp_core.attribution.explain`.

    Returns:
        ``metrics [method, target_id, metric, value]`` and
        ``curves [method, target_id, ordering, step, fraction, value]`` data frames.
    """
    if explain is None:
        from agg2exp_core.attribution import explain
    classes = [int(c) for c in classes]
    if config.baseline is None:
        config = replace(config, baseline=default_baseline(model, image))
    prediction = clean_prediction(model, image)
    probe = _Probe.build(model, image, classes, prediction, config)
    rows: list[tuple] = []
    curve_rows: list[tuple] = []
    for name, params in methods.items():
        params = dict(params)
        method = params.pop("method", name)
        start = time.perf_counter()
        attr = as_numpy(explain(model, image, method=method, classes=classes, **params))
        seconds = time.perf_counter() - start
        rows += probe.map_metrics(name, attr, seconds)
        if "sensitivity" in config.metrics:
            low, high = default_range(model, image)   # the noise is a fraction of the model's intensity range
            noisy = [as_numpy(explain(model, x, method=method, classes=classes, **params))
                     for x in noisy_copies(image, config.sensitivity.n, config.sensitivity.lower_bound,
                                           config.sensitivity.noise, config.seed, high - low)]
            rows += probe.sensitivity_metrics(name, attr, noisy, image)
        if probe.game is not None and probe.game.n_units:
            # a KernelSHAP or causal map is constant per unit: its mean over the unit is the unit's value
            per_unit = method in UNIT_METHODS and _fits_on(params, config.curves.partition)
            metric_rows, rows_of_curves = probe.curve_metrics(name, attr, "mean" if per_unit else "sum")
            rows += metric_rows
            curve_rows += rows_of_curves
    assert all(r[2] in METRICS for r in rows), "metric names come from the vocabulary"
    return pd.DataFrame(rows, columns=METRIC_COLUMNS), pd.DataFrame(curve_rows, columns=CURVE_COLUMNS)


def _fits_on(params: Mapping, curve_partition) -> bool:
    """Whether a unit method's map is one value per unit of the curves' partition (it was fitted on it)."""
    own = params.get("partition", "semantic")
    if isinstance(own, str) and isinstance(curve_partition, str):
        return own == curve_partition
    return own is curve_partition


@dataclass
class _Probe:
    """What every method of one case is measured against: subsets, drops and the curves' game."""

    classes: list[int]
    config: EvaluationConfig
    subsets: np.ndarray | None = None
    drops: np.ndarray | None = None
    game: object | None = None
    baselines: list[tuple] | None = None   # (class, metric, value) of the random and volume rankings

    @classmethod
    def build(cls, model, image, classes, prediction, config: EvaluationConfig) -> "_Probe":
        probe = cls(classes, config)
        if "faithfulness" in config.metrics:
            f = config.faithfulness
            probe.subsets = random_subsets(int(np.prod(image.shape[1:])), f.n_subsets, f.subset_size,
                                           f.max_fraction, config.seed)
            probe.drops = faithfulness_drops(model, image, classes, probe.subsets, config.baseline, prediction,
                                             config.batch_size)
        if "curves" in config.metrics:
            c = config.curves
            probe.game = build_game(model, image, classes, partition=c.partition, value=c.value,
                                    baseline=config.baseline, mask=prediction, batch_size=config.batch_size,
                                    **dict(c.game))
        return probe

    def map_metrics(self, name: str, attr: np.ndarray, seconds: float) -> list[tuple]:
        """Efficiency, complexity and faithfulness of one method's maps ``[C, *S]``."""
        metrics, rows = self.config.metrics, []
        for i, c in enumerate(self.classes):
            if "efficiency" in metrics:  # all classes share the passes: per volume, and its share per class
                rows += [(name, c, "efficiency_volume_s", seconds), (name, c, "efficiency_s", seconds / len(self.classes))]
            if "complexity" in metrics:
                rows.append((name, c, "complexity", complexity(attr[i], self.config.theta)))
            if self.drops is not None:
                sums = subset_sums(attr[i], self.subsets)
                rows.append((name, c, "faithfulness", pearson(sums, self.drops[:, i])))
                if self.config.faithfulness.n_bootstrap:
                    lo, hi = bootstrap_ci(sums, self.drops[:, i], self.config.faithfulness.n_bootstrap,
                                          seed=self.config.seed)
                    rows += [(name, c, "faithfulness_ci_low", lo), (name, c, "faithfulness_ci_high", hi)]
        return rows

    def sensitivity_metrics(self, name: str, attr: np.ndarray, noisy: list[np.ndarray], image) -> list[tuple]:
        rows = []
        for i, c in enumerate(self.classes):
            d = sensitivity_distances(attr[i], [p[i] for p in noisy], image, self.config.sensitivity.denominator)
            rows += [(name, c, "sensitivity_avg", float(d.mean())), (name, c, "sensitivity_max", float(d.max()))]
        return rows

    def baseline_metrics(self) -> list[tuple]:
        """AOPC and ABPC of a random and of a volume ranking of the units, per class (computed once per case)."""
        if self.baselines is None:
            self.baselines = []
            for ranking in BASELINE_RANKINGS:
                unit = baseline_scores(self.game.partition, self.game.n_units, ranking, self.config.seed)
                curves = perturbation_curves_from_game(self.game, np.tile(unit, (len(self.classes), 1)),
                                                       self.config.curves.steps)
                for i, c in enumerate(self.classes):
                    values = curve_metrics(curves["morf"][i], curves["lerf"][i])
                    self.baselines += [(c, f"{key}_{ranking}", values[key]) for key in ("aopc", "abpc")]
        return self.baselines

    def curve_metrics(self, name: str, attr: np.ndarray, score_by: str) -> tuple[list[tuple], list[tuple]]:
        scores = np.stack([unit_scores(attr[i], self.game.partition, score_by) for i in range(len(self.classes))])
        curves = perturbation_curves_from_game(self.game, scores, self.config.curves.steps)
        rows = [(name, c, metric, value) for c, metric, value in self.baseline_metrics()]
        curve_rows = []
        for i, c in enumerate(self.classes):
            rows += [(name, c, key, value) for key, value in curve_metrics(curves["morf"][i], curves["lerf"][i]).items()]
            for ordering in ("morf", "lerf"):
                curve_rows += [(name, c, ordering, step, float(frac), float(v))
                               for step, (frac, v) in enumerate(zip(curves["fraction"], curves[ordering][i]))]
        return rows, curve_rows
