"""Perturbation curves over units (MoRF / LeRF) and their areas (efficient-KernelSHAP Eqs. 7-9).

Units are ranked by their score (KernelSHAP value, or the attribution summed over the
unit) and removed cumulatively, most- or least-relevant first; the KernelSHAP game's
value function and baseline are recorded after each step. AOPC = mean_k (s(0) - s_MoRF(k));
ABPC = mean_k (s_LeRF(k) - s_MoRF(k)); the normalised variants rescale every curve by
``(s - s_min) / (s_max - s_min)`` with ``s_max = s(0)``, ``s_min`` = the fully perturbed
score. That ratio explodes when the span is tiny and inverts when removing everything raises
the score, so a span below ``SPAN_EPS·|s(0)|`` (or negative) is flagged: NaN, not a number.

Baselines (``baseline_scores``): a random ranking of the units and a ranking by unit volume
(largest first), on the same game, so a method's AOPC can be read against what no explanation
and pure region size achieve on the same case.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from agg2exp_core.analysis.evaluation.metrics import as_numpy
from agg2exp_core.attribution.kernelshap import UnitGame, build_game
from agg2exp_core.errors import InputError

SPAN_EPS = 0.01          # normalised curve metrics need s(0) - s(K) > SPAN_EPS·|s(0)|
BASELINE_RANKINGS = ("random", "volume")


def unit_scores(attributions, partition: np.ndarray, score_by: str = "sum") -> np.ndarray:
    """Score of each unit ``[M]``: attribution summed (or averaged) over its voxels; -1 ignored."""
    a = as_numpy(attributions).reshape(-1).astype(np.float64)
    p = np.asarray(partition).reshape(-1)
    inside = p >= 0
    m = int(p.max()) + 1 if inside.any() else 0
    total = np.bincount(p[inside], weights=a[inside], minlength=m)
    if score_by == "sum":
        return total
    if score_by == "mean":
        return total / np.maximum(np.bincount(p[inside], minlength=m), 1)
    raise InputError("score_by", f"unknown unit score '{score_by}' (use sum or mean)")


def removal_schedule(n_units: int, n_steps: int | None = None) -> np.ndarray:
    """Number of units removed after each step ``k = 0..K``: ``round(k M / K)``, ``K <= M``."""
    k = n_units if n_steps is None else max(1, min(int(n_steps), n_units))
    return np.rint(np.arange(k + 1) * n_units / max(k, 1)).astype(int)


def curve_masks(scores: np.ndarray, schedule: np.ndarray, ordering: str) -> np.ndarray:
    """Keep-masks ``[K+1, M]`` removing units most- (``morf``) or least- (``lerf``) relevant first."""
    order = np.argsort(-scores if ordering == "morf" else scores, kind="stable")
    masks = np.ones((len(schedule), len(scores)), bool)
    for k, removed in enumerate(schedule):
        masks[k, order[:removed]] = False
    return masks


def perturbation_curves_from_game(game: UnitGame, scores: np.ndarray, n_steps: int | None = None
                                  ) -> dict[str, np.ndarray]:
    """MoRF and LeRF curves of every class of a game.

    Args:
        game: the unit game (its classes, partition and value function).
        scores: ``[C, M]`` unit scores per class.

    Returns:
        dict with ``fraction [K+1]`` (units removed / M), ``morf`` and ``lerf`` ``[C, K+1]``.
    """
    m = game.n_units
    schedule = removal_schedule(m, n_steps)
    ends = game.values(np.stack([np.ones(m, bool), np.zeros(m, bool)]))  # shared by all curves
    c = len(game.classes)
    curves = {o: np.zeros((c, len(schedule))) for o in ("morf", "lerf")}
    for i in range(c):
        for ordering in ("morf", "lerf"):
            masks = curve_masks(np.asarray(scores[i], float), schedule, ordering)
            inner = game.values(masks[1:-1])[:, i] if len(schedule) > 2 else np.zeros(0)
            curves[ordering][i] = np.concatenate([[ends[0, i]], inner, [ends[1, i]]])
    return {"fraction": schedule / max(m, 1), **curves}


def perturbation_curves(model: Callable, image: torch.Tensor, attributions, class_id: int, *,
                        partition="semantic", value: str = "logit", score_by: str = "sum",
                        n_steps: int | None = None, **game_params) -> dict[str, np.ndarray]:
    """MoRF/LeRF curves of one class's map ``[*S]`` over the units of ``partition``.

    ``score_by="mean"`` recovers the unit values of a KernelSHAP map that is constant per
    unit. ``game_params`` go to :func:`~agg2exp_core.attribution.kernelshap.build_game`
    (roi, baseline, window, ...). Returns ``fraction [K+1]``, ``morf [K+1]``, ``lerf [K+1]``.
    """
    game = build_game(model, image, [class_id], partition=partition, value=value, **game_params)
    scores = unit_scores(attributions, game.partition, score_by)[None]
    out = perturbation_curves_from_game(game, scores, n_steps)
    return {"fraction": out["fraction"], "morf": out["morf"][0], "lerf": out["lerf"][0]}


def baseline_scores(partition: np.ndarray, n_units: int, ranking: str, seed: int | None = 0) -> np.ndarray:
    """Unit scores ``[M]`` of a baseline ranking: ``random`` (seeded) or ``volume`` (voxels per unit)."""
    if ranking == "random":
        return np.random.default_rng(0 if seed is None else int(seed)).permutation(n_units).astype(float)
    if ranking == "volume":
        p = np.asarray(partition).reshape(-1)
        return np.bincount(p[p >= 0], minlength=n_units)[:n_units].astype(float)
    raise InputError("ranking", f"unknown baseline ranking '{ranking}' (use {', '.join(BASELINE_RANKINGS)})")


def curve_metrics(morf: np.ndarray, lerf: np.ndarray, eps: float = SPAN_EPS) -> dict[str, float]:
    """AOPC, ABPC and their normalised variants (efficient-KernelSHAP Eqs. 7-9).

    ``morf``, ``lerf``: ``[K+1]`` scores with step 0 the clean input and step K the fully
    perturbed one. The normalised variants are NaN (flagged) when ``s(0) - s(K)`` is at most
    ``eps·|s(0)|``: a tiny span makes them explode, a negative one inverts them.
    """
    morf, lerf = np.asarray(morf, float), np.asarray(lerf, float)
    if len(morf) < 2:
        return {"aopc": float("nan"), "abpc": float("nan"), "naopc": float("nan"), "nabpc": float("nan")}
    s0, s_min = morf[0], morf[-1]
    out = {"aopc": float(np.mean(s0 - morf[1:])), "abpc": float(np.mean(lerf[1:] - morf[1:]))}
    span = s0 - s_min
    if not span > eps * max(abs(s0), 1e-12):
        out.update(naopc=float("nan"), nabpc=float("nan"))
        return out
    nm, nl = (morf - s_min) / span, (lerf - s_min) / span
    out.update(naopc=float(np.mean(nm[0] - nm[1:])), nabpc=float(np.mean(nl[1:] - nm[1:])))
    return out


