"""Shapley values of a game over units: the Shapley kernel, coalition sampling and the solver."""
from __future__ import annotations

from math import comb
from typing import Callable

import numpy as np


def kernel_size_weights(n_units: int) -> np.ndarray:
    """Shapley-kernel mass of each coalition size ``k = 0..M`` (0 at the ends), summing to 1.

    A single coalition of size ``k`` has weight ``(M-1) / (C(M,k) k (M-k))``; summed over
    the ``C(M,k)`` coalitions of that size this gives ``(M-1) / (k (M-k))``.
    """
    m = n_units
    w = np.zeros(m + 1)
    if m < 2:
        return w
    k = np.arange(1, m)
    w[1:m] = (m - 1) / (k * (m - k))
    return w / w.sum()


def sample_coalitions(n_units: int, n_coalitions: int, seed: int | np.random.Generator | None = 0,
                      max_draw_factor: int = 20) -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalitions of the middle sizes ``1..M-1`` and their regression weights.

    The budget ``n_coalitions`` counts every evaluation, the full and empty coalitions
    included, so ``n_coalitions - 2`` middle coalitions are drawn. Size pairs ``(k, M-k)``
    are enumerated completely, from the smallest ``k`` up, while they fit the budget; the
    rest are sampled in complementary pairs (size ``k ~ (M-1)/(k(M-k))``, then a uniform
    subset), duplicates merged into weights.

    Returns:
        masks: bool ``[n, M]``, ``True`` = unit kept.
        weights: float ``[n]``, summing to 1 over the middle sizes.
        exact: ``True`` when all ``2**M - 2`` middle coalitions are enumerated.
    """
    m = int(n_units)
    rng = np.random.default_rng(seed)
    size_w = kernel_size_weights(m)
    budget = max(int(n_coalitions) - 2, 0)
    rows: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    remaining = list(range(1, m))
    for k in range(1, m // 2 + 1):
        sizes = sorted({k, m - k})
        count = sum(comb(m, s) for s in sizes)
        if m < 2 or count > budget:
            break
        for s in sizes:
            subsets = _all_subsets(m, s)
            rows.append(subsets)
            weights.append(np.full(len(subsets), size_w[s] / comb(m, s)))
            remaining.remove(s)
        budget -= count
    exact = not remaining
    if remaining and budget >= 2:
        masks, w = _sample_pairs(m, remaining, size_w, budget, rng, max_draw_factor)
        rows.append(masks)
        weights.append(w)
    if not rows:
        return np.zeros((0, m), bool), np.zeros(0), exact or m < 2
    return np.concatenate(rows), np.concatenate(weights), exact


def _all_subsets(m: int, size: int) -> np.ndarray:
    """All ``C(m, size)`` keep-masks with exactly ``size`` units kept, ``[C, m]`` bool."""
    from itertools import combinations
    out = np.zeros((comb(m, size), m), bool)
    for i, idx in enumerate(combinations(range(m), size)):
        out[i, list(idx)] = True
    return out


def _sample_pairs(m: int, sizes: list[int], size_w: np.ndarray, budget: int,
                  rng: np.random.Generator, max_draw_factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Antithetic samples of the remaining sizes; weight = their mass * draw frequency."""
    p = size_w[sizes] / size_w[sizes].sum()
    mass = size_w[sizes].sum()
    counts: dict[bytes, list] = {}
    draws = 0
    target = budget - budget % 2
    chunk = max(target // 2, 1)
    while len(counts) < target and draws < max_draw_factor * max(target, 2):
        k = rng.choice(sizes, size=chunk, p=p)
        ranks = rng.random((chunk, m)).argsort(axis=1).argsort(axis=1)
        masks = ranks < k[:, None]
        for mask in masks:
            for row in (mask, ~mask):  # a coalition and its complement
                key = np.packbits(row).tobytes()
                if key in counts:
                    counts[key][1] += 1
                elif len(counts) < target:
                    counts[key] = [row.copy(), 1]
                else:
                    continue
            draws += 2
            if len(counts) >= target:
                break
    rows = np.array([v[0] for v in counts.values()], bool).reshape(-1, m)
    freq = np.array([v[1] for v in counts.values()], float)
    return rows, mass * freq / freq.sum()


def solve_kernel_shap(masks: np.ndarray, weights: np.ndarray, values: np.ndarray,
                      v_empty: np.ndarray, v_full: np.ndarray) -> np.ndarray:
    """Weighted least squares for Shapley values under the exact efficiency constraint.

    Minimises ``sum_i w_i (v(z_i) - v(0) - phi^T z_i)^2`` subject to
    ``1^T phi = v(1) - v(0)``, by eliminating the last unit.

    Args:
        masks: ``[n, M]`` keep-masks of the middle coalitions.
        weights: ``[n]`` kernel weights.
        values: ``[n, C]`` value of each coalition per class.
        v_empty, v_full: ``[C]`` values of the empty and full coalitions.

    Returns:
        ``[C, M]`` Shapley values.
    """
    v_empty = np.atleast_1d(np.asarray(v_empty, float))
    delta = np.atleast_1d(np.asarray(v_full, float)) - v_empty
    m = masks.shape[1]
    if m == 0:
        return np.zeros((len(delta), 0))
    if m == 1:
        return delta[:, None].copy()
    if len(masks) == 0:  # no information beyond efficiency: split it evenly
        return np.repeat(delta[:, None] / m, m, axis=1)
    z = masks.astype(float)
    y = np.asarray(values, float) - v_empty[None, :] - z[:, -1:] * delta[None, :]
    x = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(np.asarray(weights, float))[:, None]
    head, *_ = np.linalg.lstsq(x * sw, y * sw, rcond=None)  # [M-1, C]
    last = delta - head.sum(axis=0)
    return np.concatenate([head, last[None, :]], axis=0).T


def shapley_from_game(game_values: Callable[[np.ndarray], np.ndarray], n_units: int,
                      n_coalitions: int = 200, seed: int | None = 0) -> tuple[np.ndarray, dict]:
    """KernelSHAP on any game: ``game_values(keep [n, M] bool) -> [n, C]``.

    Returns ``(values [C, M], info)`` with ``info`` keys ``v_full``, ``v_empty``,
    ``exact``, ``n_evaluations``.
    """
    ends = np.stack([np.ones(n_units, bool), np.zeros(n_units, bool)])
    v_full, v_empty = game_values(ends)
    masks, weights, exact = sample_coalitions(n_units, n_coalitions, seed)
    values = game_values(masks) if len(masks) else np.zeros((0, len(v_full)))
    phi = solve_kernel_shap(masks, weights, values, v_empty, v_full)
    return phi, {"v_full": v_full, "v_empty": v_empty, "exact": bool(exact or n_units < 2),
                 "n_evaluations": len(masks) + 2}
