"""Cohort comparison: permutation test of two cohorts' mean RoI-importance matrices.

Two cohorts A and B (e.g. female vs male, reference vs external) each give a stack of
local matrices ``[cases, *cell_shape]``. The statistic of every cell is the difference
of the cohort means ``mean_A - mean_B``; its two-sided permutation p-value is

    p = (1 + #{permutations with |d_perm| >= |d_obs|}) / (1 + n_permutations),

so p lies in (0, 1]. All cells share the same permutations (one label shuffle tests
every cell), and each batch of permutations is two matrix products over all cells.
Missing values (NaN, e.g. positive-only masses of an imported run) are left out of
each cell's means; a cell without an observation in one of the cohorts gets p = NaN.
A permutation that leaves a cell without observations on one side gives no statistic for
that cell and is left out of its count: ``p = (1 + #extreme) / (1 + #permutations with a
statistic)`` (conditioning on the permutations where the difference exists keeps p valid).
With ``fdr=True`` the p-values are adjusted by Benjamini-Hochberg
(``scipy.stats.false_discovery_control``) before comparing with ``alpha``.

``stop_at=h`` makes the test sequential (Besag & Clifford 1991, "Sequential Monte Carlo
p-values", Biometrika 78:301-304): a cell stops drawing permutations at its h-th extreme one,
after L permutations, with the valid p-value ``h / L``; cells that never reach h keep
``(1 + #extreme) / (1 + #permutations)``. Cells far from significance stop within the first
hundreds, so the products of the remaining permutations shrink to the few cells that matter,
while a cell's p is exact wherever it could pass the test (p < h / n_permutations).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

import numpy as np
from scipy.stats import false_discovery_control

# Ties of |d_perm| and |d_obs| up to float32 noise count as "at least as extreme".
_TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`permutation_test`; arrays have the cell shape of the inputs."""

    difference: np.ndarray      # mean_A - mean_B per cell
    mean_a: np.ndarray
    mean_b: np.ndarray
    p_values: np.ndarray        # raw permutation p-values in (0, 1]; NaN where untestable
    q_values: np.ndarray        # BH-adjusted p-values (equal to p_values when fdr=False)
    significant: np.ndarray     # bool: q_values < alpha
    n_a: int
    n_b: int
    n_permutations: int
    alpha: float
    fdr: bool
    seed: int


def permutation_test(a: np.ndarray, b: np.ndarray, n_permutations: int = 1000, seed: int = 0,
                     alpha: float = 0.05, fdr: bool = True, batch_size: int = 250,
                     stop_at: int | None = None) -> PermutationResult:
    """Two-sided permutation test of the difference of cohort means, cell by cell.

    ``a``: ``[n_a, *cells]``, ``b``: ``[n_b, *cells]`` (same cell shape). Deterministic
    for a given ``seed``. ``stop_at``: sequential stopping at that many extreme permutations
    (module docstring). Raises ``ValueError`` for mismatched shapes, an empty cohort,
    ``n_permutations < 1`` or ``stop_at < 1``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim < 1 or b.ndim < 1 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"cohorts have different cell shapes: {a.shape[1:]} vs {b.shape[1:]}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"empty cohort (n_a={len(a)}, n_b={len(b)})")
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    if stop_at is not None and stop_at < 1:
        raise ValueError("stop_at must be at least 1")
    cell_shape = a.shape[1:]
    n_a, n_b = len(a), len(b)
    pooled = np.concatenate([a.reshape(n_a, -1), b.reshape(n_b, -1)])   # [n, cells]
    present = ~np.isnan(pooled)
    values = np.where(present, pooled, 0.0)
    counts = None if present.all() else present.astype(float)
    total_sum = values.sum(axis=0)
    total_count = present.sum(axis=0).astype(float)

    membership = np.zeros(n_a + n_b)
    membership[:n_a] = 1.0
    observed, mean_a, mean_b = (x[0] for x in _mean_difference(membership[None, :], values, counts,
                                                               total_sum, total_count))
    # Permutations run in float32 (half the matrix-product time); the observed statistic is
    # recomputed the same way so that ties are judged at the same precision.
    values32 = values.astype(np.float32)
    counts32 = None if counts is None else counts.astype(np.float32)
    sum32, count32 = values32.sum(axis=0, dtype=np.float64).astype(np.float32), total_count.astype(np.float32)
    observed32 = _mean_difference(membership[None, :].astype(np.float32), values32, counts32, sum32, count32)[0][0]
    threshold = np.abs(observed32) - _TIE_TOLERANCE * np.maximum(1.0, np.abs(observed32))

    counter = _ExtremeCounter(values32, counts32, sum32, count32, threshold, stop_at)
    with closing(_label_batches(membership, n_permutations, batch_size, seed)) as batches:
        for labels in batches:
            if not counter.add(labels):
                break
    p_values = counter.p_values()
    p_values[np.isnan(observed)] = np.nan
    q_values = benjamini_hochberg(p_values) if fdr else p_values.copy()
    with np.errstate(invalid="ignore"):
        significant = np.nan_to_num(q_values, nan=1.0) < alpha
    shape = lambda x: x.reshape(cell_shape)  # noqa: E731
    return PermutationResult(difference=shape(observed), mean_a=shape(mean_a), mean_b=shape(mean_b),
                             p_values=shape(p_values), q_values=shape(q_values),
                             significant=shape(significant), n_a=n_a, n_b=n_b,
                             n_permutations=int(n_permutations), alpha=float(alpha), fdr=bool(fdr),
                             seed=int(seed))


class _ExtremeCounter:
    """Counts, per cell, the permutations at least as extreme as the observed difference and the
    permutations with a statistic at all; with ``stop_at``, a cell leaves the count (and the
    matrix products) at its ``stop_at``-th extreme permutation, keeping p = stop_at / L."""

    def __init__(self, values, counts, total_sum, total_count, threshold, stop_at: int | None):
        self.inputs = (values, counts, total_sum, total_count)
        self.threshold, self.stop_at = threshold, stop_at
        n_cells = values.shape[1]
        self.exceed, self.defined = np.zeros(n_cells), np.zeros(n_cells)
        self.stopped = np.full(n_cells, np.nan)          # p of the cells that stopped early
        self.active, self._subset = np.arange(n_cells), self.inputs
        if stop_at is not None:  # a cell without an observed difference is untestable: nothing to count
            self._drop(~np.isfinite(threshold))

    def add(self, labels: np.ndarray) -> bool:
        """Count one batch of labels; False once every cell has stopped."""
        cells = self.active
        permuted, _, _ = _mean_difference(labels, *self._subset)
        with np.errstate(invalid="ignore"):  # NaN compares False; such permutations are not counted
            extreme = np.abs(permuted) >= self.threshold[cells]
        defined = ~np.isnan(permuted)
        if self.stop_at is None:
            self.exceed[cells] += extreme.sum(axis=0)
            self.defined[cells] += defined.sum(axis=0)
            return True
        running = self.exceed[cells] + np.cumsum(extreme, axis=0)   # [batch, active cells]
        reached = running >= self.stop_at
        done = reached.any(axis=0)
        at = reached.argmax(axis=0)                                  # the row of the stop_at-th extreme one
        seen = self.defined[cells] + np.cumsum(defined, axis=0)[at, np.arange(len(cells))]
        self.stopped[cells[done]] = self.stop_at / seen[done]
        self.exceed[cells] = running[-1]
        self.defined[cells] += defined.sum(axis=0)
        self._drop(done)
        return len(self.active) > 0

    def _drop(self, leaving: np.ndarray) -> None:
        """Take the active cells flagged in ``leaving`` out of the products."""
        if not leaving.any():
            return
        keep = ~leaving
        values, counts, total_sum, total_count = self._subset
        self.active = self.active[keep]
        self._subset = (values[:, keep], None if counts is None else counts[:, keep], total_sum[keep],
                        total_count[keep])

    def p_values(self) -> np.ndarray:
        # A permutation that leaves one side of a cell without observations has no statistic: it
        # is neither extreme nor not, so it drops out of the count (else it would shrink p).
        p = (1.0 + self.exceed) / (1.0 + self.defined)
        early = np.isfinite(self.stopped)
        p[early] = self.stopped[early]
        return p


def _label_batches(membership: np.ndarray, n_permutations: int, batch_size: int, seed: int):
    """Shuffled labels ``[size, n]`` (float32, 1 = cohort A) in batches of ``batch_size``.

    Each row is a uniformly random assignment of the ``n_a`` cohort-A labels (``random_subsets``).
    Rows are drawn in order from two generators, so the labels do not depend on the batch size.
    A worker thread draws the next batch while the caller multiplies the previous one (both
    release the GIL).
    """
    bits, fixes = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    n_a = int(membership.sum())
    sizes = [min(batch_size, n_permutations - start) for start in range(0, n_permutations, batch_size)]

    def draw(size: int) -> np.ndarray:
        return random_subsets(bits, fixes, size, len(membership), n_a).astype(np.float32)

    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = worker.submit(draw, sizes[0])
        for following in sizes[1:] + [None]:
            labels = pending.result()
            if following is not None:
                pending = worker.submit(draw, following)
            yield labels


def random_subsets(bits: np.random.Generator, fixes: np.random.Generator, size: int, n: int,
                   k: int) -> np.ndarray:
    """``[size, n]`` booleans, each row a uniformly random subset of exactly ``k`` of ``n`` positions.

    A Fisher-Yates shuffle costs a bounded random integer per position (≈ 20 ns; at 20,000 cases
    and 13,000 permutations that was most of the test). Here each position costs one random byte:
    a row starts as independent Bernoulli(t/256) picks, whose set, given its size m, is uniform
    among the m-subsets; removing m - k of its members (or adding k - m non-members), chosen
    uniformly, leaves every k-subset equally likely (the whole procedure is symmetric in the
    positions and ends with k). Only ≈ sqrt(n) positions per row need a second draw.
    """
    threshold = min(max(round(256 * k / n), 1), 255)
    words = -(-n // 8)                              # whole 64-bit words per row: the stream is row by row
    raw = bits.bit_generator.random_raw(size * words).reshape(size, words).view(np.uint8)[:, :n]
    chosen = raw < threshold
    excess = np.count_nonzero(chosen, axis=1) - k
    for row in np.flatnonzero(excess):
        surplus = excess[row] > 0
        candidates = np.flatnonzero(chosen[row] == surplus)
        flip = fixes.choice(len(candidates), abs(int(excess[row])), replace=False, shuffle=False)
        chosen[row, candidates[flip]] = not surplus
    return chosen


def _mean_difference(labels: np.ndarray, values: np.ndarray, counts: np.ndarray | None,
                     total_sum: np.ndarray, total_count: np.ndarray):
    """Per-permutation cohort means: ``labels`` ``[P, n]`` is 1 for cohort A, 0 for B.

    ``counts`` is None when no value is missing (every cell then has the cohort sizes as counts).
    """
    sum_a = labels @ values
    if counts is None:
        count_a = np.broadcast_to(labels.sum(axis=1, keepdims=True), sum_a.shape)
    else:
        count_a = labels @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a = sum_a / count_a
        mean_b = (total_sum - sum_a) / (total_count - count_a)
    mean_a[count_a == 0] = np.nan
    mean_b[(total_count - count_a) == 0] = np.nan
    return mean_a - mean_b, mean_a, mean_b


def permutations_for_fdr(n_cells: int, alpha: float = 0.05, floor: int = 1000, cap: int = 20000) -> int:
    """Permutations needed so that one cell can pass BH at ``alpha`` among ``n_cells`` tests.

    The smallest permutation p-value is ``1 / (P + 1)``; after Benjamini-Hochberg over
    ``n_cells`` cells a lone strong cell gets ``q = n_cells / (P + 1)``. So ``P`` must reach
    ``n_cells / alpha``; twice that leaves room for a few discoveries. Rounded up to
    thousands, within ``[floor, cap]``.
    """
    needed = 2.0 * max(int(n_cells), 1) / max(float(alpha), 1e-6)
    return int(min(max(np.ceil(needed / 1000.0) * 1000, floor), cap))


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values) of the finite entries; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = false_discovery_control(p[finite], method="bh")
    return q
