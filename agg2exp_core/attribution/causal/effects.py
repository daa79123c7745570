"""Causal regional effects (PdCR for volumes): the average treatment effect of replacing a region.

For region ``r`` of a partition and class ``c``::

    ATE[c, r] = E_donor[ f̂_c(x) - f̂_c(x with r replaced by the donor's content) ]

``f̂_c`` is the value function of the KernelSHAP game (default the aggregated class logit of
Agg2Exp, summed over the clean predicted mask of ``c``, which stays fixed). Positive: the
region's real content supports class ``c``. The intervention is a coalition that removes
exactly one unit, so the game's engines serve it: with a sliding window only the windows
that overlap ``r`` are recomputed (the clean windows are cached once), all classes come
from the same forward passes, and a donor only changes what removed voxels take
(``engine.with_baseline``).

Monte-Carlo over donor images: every region first gets ``n_screen`` donors (the coarse
screen), then ``n_screen`` more at a time until, with at least ``MIN_DONORS`` donors, the
standard error of every class is at most ``tolerance * |ATE|`` (relative to the effect itself:
1 % of the class's summed logit stopped most regions after 3 donors with an SE that covered
68-85 % at ±1.96 SE), or ``n_samples`` donors (at most all of them) were used. Intervals use
Student's t with n - 1 degrees of freedom (``effect_interval``). A sum of effects over regions
(a RoI made of several regions) takes its SE from the per-donor sums (``summed_effects``): the
regions draw from the same donors, so their estimates are correlated.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from agg2exp_core.attribution import options
from agg2exp_core.attribution.causal.donors import DonorSet, donor_set
from agg2exp_core.attribution.kernelshap import GAME_PARAMS, EngineStats, GameConfig, UnitGame, build_game
from agg2exp_core.attribution.kernelshap.engines import SlidingWindowEngine

SAMPLING_PARAMS = ("donor", "donors", "n_samples", "n_screen", "tolerance", "seed")
CAUSAL_PARAMS = GAME_PARAMS + SAMPLING_PARAMS
MIN_DONORS = 10        # no early stop before this many donors: an SE from 3 donors is itself too noisy


@dataclass(frozen=True)
class SamplingSpec:
    """Monte-Carlo over donors: screen, budget, stopping tolerance (relative to |ATE|), seed."""

    n_samples: int = 20
    n_screen: int = 3
    tolerance: float = 0.1
    seed: int | None = 0

    def __post_init__(self):
        options.positive_int("n_samples", self.n_samples)
        options.positive_int("n_screen", self.n_screen)
        options.finite_number("tolerance", self.tolerance, low=0.0)
        if self.seed is not None:
            options.check_seed(self.seed)


@dataclass
class RegionEffects:
    """The class x region effects of one image.

    Attributes:
        ate, se: ``[C, R]`` effect and its standard error (0 for a deterministic donor, NaN
            from a single donor image); ``n``: ``[R]`` donors evaluated (0: the region lies
            outside every window that reaches the explained voxels, so its effect is exactly 0).
        region_ids: ``[R]`` ids of the regions in ``partition`` (``[*S]``, -1: no region).
        v_clean: ``[C]`` value of the clean image.
        samples, donor_ids: per region, its donors' effects ``[n, C]`` and the donors' indices
            ``[n]`` (for SEs of sums over regions, ``summed_effects``).
    """

    ate: np.ndarray
    se: np.ndarray
    n: np.ndarray
    region_ids: np.ndarray
    partition: np.ndarray
    classes: list[int]
    v_clean: np.ndarray
    donor: str
    value: str
    stats: EngineStats = field(default_factory=EngineStats)
    seconds: float = 0.0
    samples: list = field(default_factory=list)
    donor_ids: list = field(default_factory=list)

    def voxel_map(self, what: str = "ate") -> np.ndarray:
        """``[C, *S]``: each region's ``ate`` (or ``se``) at every voxel of the region, 0 elsewhere."""
        table = getattr(self, what)
        out = np.zeros((len(self.classes), *self.partition.shape))
        inside = self.partition >= 0
        if table.size and inside.any():
            column = np.searchsorted(self.region_ids, self.partition[inside])
            out[:, inside] = np.nan_to_num(table[:, column])
        return out


def causal_run(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None, *,
               donor: str = "constant", donors: Sequence | None = None, n_samples: int = 20, n_screen: int = 3,
               tolerance: float = 0.1, seed: int | None = 0, **params) -> RegionEffects:
    """Effects of every region of one image on every class (see :func:`causal_explain`)."""
    start = time.perf_counter()
    image = options.check_image(image).detach().cpu()
    sampling = SamplingSpec(n_samples, n_screen, tolerance, seed)
    params = dict(params)
    baseline = params.pop("baseline", None)
    baseline = options.default_baseline(model, image) if baseline is None else baseline   # the model's air
    donor_pool = donor_set(image, donor, donors, baseline)
    params.setdefault("cache_mb", 0.0)  # every intervention is new: memoising fresh patches only costs memory
    network, window = options.split_model(model)
    first = donor_pool.volumes[0]
    config = GameConfig.from_params({**params, "baseline": first.numpy() if first.dim() else float(first)}, window)
    game = build_game(model, image, classes, config=config)
    partition = config.units.build(tuple(image.shape[1:]), game.prediction)
    region_ids = np.unique(partition[partition >= 0])
    c, r = len(game.classes), len(region_ids)
    ate, se, n = np.zeros((c, r)), np.zeros((c, r)), np.zeros(r, np.int64)
    v_clean = np.zeros(c)
    samples_of = [np.zeros((0, c))] * r
    donors_of = [np.zeros(0, np.int64)] * r
    if game.engine is not None and game.n_units:
        values = _value_function(game)
        v_clean = values(game.engine, np.ones((1, game.n_units), bool))[0]
        diffs, drawn = _sample_effects(game, values, donor_pool, sampling, v_clean)
        column = np.searchsorted(region_ids, game.unit_ids)
        for j, samples in enumerate(diffs):
            ate[:, column[j]], se[:, column[j]] = _mean_and_se(samples, donor_pool.deterministic)
            n[column[j]] = len(samples)
            samples_of[column[j]], donors_of[column[j]] = samples, drawn[j]
    return RegionEffects(ate, se, n, region_ids, partition, game.classes, v_clean, donor_pool.kind,
                         config.value.value, game.stats, time.perf_counter() - start, samples_of, donors_of)


def effect_interval(ate, se, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """``ATE ± t_{n-1} · SE`` (Student's t: the SE comes from n donors); NaN below 2 donors, the
    point itself where SE is 0 (a deterministic donor)."""
    ate, se = np.asarray(ate, dtype=float), np.asarray(se, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), ate.shape)
    with np.errstate(invalid="ignore"):
        t = np.where(n >= 2, stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)), np.nan)
    half = np.where(se == 0, 0.0, t * se)
    return ate - half, ate + half


def summed_effects(effects: RegionEffects, columns: np.ndarray, deterministic: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """(ATE ``[C]``, SE ``[C]``, donors) of the sum of the effects of regions ``columns``.

    The sum's ATE is the sum of the regions' ATEs. Its SE comes from the per-donor sums over the
    donors every region drew (regions share donors, so the regions' SEs do not add in quadrature);
    with fewer than 2 common donors it falls back to the quadrature sum (independence).
    """
    columns = np.asarray(columns)
    ate = effects.ate[:, columns].sum(axis=1)
    quadrature = np.sqrt((effects.se[:, columns] ** 2).sum(axis=1))
    n_min = int(effects.n[columns].min()) if len(columns) else 0
    if deterministic or not effects.samples or len(columns) < 2:
        return ate, quadrature, n_min
    drawn = [effects.donor_ids[k] for k in columns]
    common = functools.reduce(np.intersect1d, drawn)
    if len(common) < 2:
        return ate, quadrature, n_min
    per_donor = sum(effects.samples[k][_rows_of(d, common)] for k, d in zip(columns, drawn))  # [common, C]
    return ate, per_donor.std(axis=0, ddof=1) / math.sqrt(len(common)), len(common)


def _rows_of(drawn: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in ``drawn`` (a region's donor indices, in draw order) of the donors ``wanted``."""
    position = {int(d): i for i, d in enumerate(drawn)}
    return np.array([position[int(w)] for w in wanted], dtype=np.int64)


def _sample_effects(game: UnitGame, values: Callable, pool: DonorSet, sampling: SamplingSpec,
                    v_clean: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per effective unit, the effects ``[n_j, C]`` of its donors (screen, then until the SE is
    small) and the donors' indices ``[n_j]``."""
    m = game.n_units
    n_max = 1 if pool.deterministic else min(sampling.n_samples, pool.size)
    orders = [pool.order(sampling.seed, int(u)) for u in game.unit_ids]
    samples: list[list[np.ndarray]] = [[] for _ in range(m)]
    target = {j: min(sampling.n_screen, n_max) for j in range(m)}
    engines: dict[int, object] = {}
    while target:
        wanted = defaultdict(list)  # donor -> regions that draw it in this round
        for j, goal in target.items():
            for t in range(len(samples[j]), goal):
                wanted[int(orders[j][t])].append(j)
        for k in sorted(wanted):
            regions = wanted[k]
            keep = np.ones((len(regions), m), bool)
            keep[np.arange(len(regions)), regions] = False
            for j, v in zip(regions, values(_engine_for(game, engines, pool, k), keep)):
                samples[j].append(v_clean - v)
        target = {j: min(len(samples[j]) + sampling.n_screen, n_max) for j in target
                  if len(samples[j]) < n_max and not _precise(samples[j], sampling.tolerance)}
    return ([np.asarray(s).reshape(len(s), -1) for s in samples],
            [np.asarray(orders[j][:len(samples[j])], dtype=np.int64) for j in range(m)])


def _value_function(game: UnitGame) -> Callable[[object, np.ndarray], np.ndarray]:
    """``values(engine, keep) -> [n, C]``. The logit value on the cached sliding window is a
    sum over patches of their masked logits: only the patches an intervention touches run and
    nothing is fused (``SlidingWindowEngine.masked_sums``); other values go through the game."""
    engine = game.engine
    if game.value != "logit" or not isinstance(engine, SlidingWindowEngine) or engine.inference != "cached":
        return lambda e, keep: dataclasses.replace(game, engine=e).values(keep)
    select = torch.stack([(game.p0 == c) & game.rois[i] for i, c in enumerate(game.classes)])
    counts = select.flatten(1).sum(dim=1).clamp(min=1).numpy().astype(np.float64)
    divide = counts if game.aggregation == "mean" else np.ones(len(game.classes))
    engine.masked_sums(np.ones((0, game.n_units), bool), select, game.classes)  # clean terms, shared by donors
    return lambda e, keep: e.masked_sums(keep, select, game.classes) / divide


def _engine_for(game: UnitGame, engines: dict, pool: DonorSet, k: int):
    """The engine whose removed voxels take donor ``k`` (engines share the clean cache)."""
    if pool.deterministic:
        return game.engine
    if k not in engines:
        engines[k] = game.engine.with_baseline(pool.volumes[k])
    return engines[k]


def _precise(samples: list[np.ndarray], tolerance: float) -> bool:
    """Whether every class's SE is at most ``tolerance`` of its |ATE|, from at least MIN_DONORS donors."""
    if tolerance <= 0 or len(samples) < MIN_DONORS:
        return False
    samples = np.asarray(samples)
    se = np.std(samples, axis=0, ddof=1) / math.sqrt(len(samples))
    return bool(np.all(se <= tolerance * np.abs(samples.mean(axis=0))))


def _mean_and_se(samples: np.ndarray, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
    mean = samples.mean(axis=0)
    if deterministic:
        return mean, np.zeros_like(mean)
    if len(samples) < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, samples.std(axis=0, ddof=1) / math.sqrt(len(samples))


def causal_explain(model: Callable, image: torch.Tensor, classes: Sequence[int] | None = None,
                   **params) -> torch.Tensor:
    """Causal regional effects as a voxel map: each region's ATE at every voxel of the region.

    Args:
        model: a ``Segmenter`` (its network and window) or a callable ``[B, 1, *S] -> [B, l, *S]``.
        image: ``[1, *S]`` scaled CT.
        classes: channels to explain (default: all ``l``), all from the same forward passes.
        partition: the regions, as for KernelSHAP: ``semantic`` (default), ``cubes``, ``fcc``,
            ``hybrid`` or an integer label map ``[*S]`` (-1: voxels of no region); with
            ``labels``, ``spacing``, ``n_per_axis``, ``scale_mm``, ``offset_mm``, ``exclude_labels``.
        donor: ``constant`` (default; ``baseline``, a scalar or ``[*S]``, default the model's air,
            ``Segmenter.air_value``: -1024 HU in its intensity space; 0.0 for a callable),
            ``mean`` (voxel-wise mean of ``donors``) or ``images`` (Monte-Carlo over ``donors``:
            volumes ``[*S]`` or ``[1, *S]`` on the image's grid, preprocessed like it).
        n_samples: most donors per region (default 20; at most ``len(donors)``).
        n_screen: donors of the first round, and of each further round (default 3).
        tolerance: stop a region once, from at least ``MIN_DONORS`` donors, every class's
            standard error is at most ``tolerance * |ATE|`` (default 0.1; 0 = always ``n_samples``).
        seed: the donor order of each region (deterministic for a seed).
        value: ``logit`` (default: Agg2Exp's f̂_c), ``dice``, ``softdice``, ``tp``, ``fp`` against
            the clean prediction; ``aggregation``, ``roi``, ``roi_margin``, ``mask`` as for KernelSHAP.
        window (or roi_size, overlap, ...), inference (``cached`` default; ``full``: MONAI on the
            whole volume per intervention, the naive reference), receptive_field, batch_size.

    Returns:
        ``[len(classes) or l, *S]`` in the image's dtype, on the CPU.
    """
    result = causal_run(model, image, classes, **params)
    return torch.from_numpy(result.voxel_map()).to(torch.as_tensor(image).dtype)
