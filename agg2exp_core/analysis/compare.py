"""Cohort comparison: permutation test of two cohorts' mean RoI-importance matrices.

Two cohorts A and B (e.g. female vs male, reference vs external) each give a stack of
local matrices ``[cases, *cell_shape]``. The statistic of every cell is Welch's t,

    t = (mean_A - mean_B) / sqrt(var_A / n_A + var_B / n_B),

and its two-sided permutation p-value is

    p = (1 + #{permutations with |t_perm| >= |t_obs|}) / (1 + n_permutations),

so p lies in (0, 1]. Why studentised: permuting the raw difference of means tests "the two
cohorts have the same distribution"; with unequal variances and unequal sizes it rejects equal
means far too often (10 cases of SD 0.03 against 60 of SD 0.01: 30 % of null cells at p < 0.05).
The permutation distribution of a studentised statistic is asymptotically the same as its
sampling distribution under equal means whatever the variances (Janssen 1997, Statist. Probab.
Lett. 36:9-21; Chung & Romano 2013, Ann. Statist. 41:484-507), and it stays exact when the
cohorts are exchangeable. ``benchmarks/statistics_calibration.py`` measures the difference.

All cells share the same permutations (one label shuffle tests every cell), and each batch of
permutations is one matrix product over all cells (of the values and their squares).
Missing values (NaN, e.g. positive-only masses of an imported run) are left out of each cell's
means and variances; a cell with fewer than two observations in one of the cohorts has no t and
gets p = NaN. A permutation that leaves a cell with fewer than two observations on one side
gives no statistic for that cell and is left out of its count: ``p = (1 + #extreme) / (1 +
#permutations with a statistic)`` (conditioning on the permutations where t exists keeps p valid).
With ``fdr=True`` the p-values are adjusted by Benjamini-Hochberg, or by Benjamini-Yekutieli
(``fdr_method="by"``: valid under any dependence; the cells of a row share one unit of mass, so
they are dependent), both ``scipy.stats.false_discovery_control``, before comparing with ``alpha``.

``stop_at=h`` makes the test sequential (Besag & Clifford 1991, "Sequential Monte Carlo
p-values", Biometrika 78:301-304): a cell stops drawing permutations at its h-th extreme one,
after L permutations, with the valid p-value ``h / L``; cells that never reach h keep
``(1 + #extreme) / (1 + #permutations)``. Cells far from significance stop within the first
hundreds, so the products of the remaining permutations shrink to the few cells that matter,
while a cell's p is exact wherever it could pass the test (p < h / n_permutations). That is
what lets ``permutations_for_fdr`` scale the count with cells / alpha (13,923 cells need
hundreds of thousands of permutations, but only for the few cells still running).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

import numpy as np
from scipy.stats import false_discovery_control

# Ties of |t_perm| and |t_obs| up to float32 noise count as "at least as extreme".
_TIE_TOLERANCE = 1e-5
FDR_METHODS = ("bh", "by")
# Besag-Clifford stop of the callers that scale the permutations with the cells (dashboard, drift).
DEFAULT_STOP_AT = 20
# Cohorts up to this size draw their labels as the k smallest of n uniform keys (``random_subsets``).
_PARTITION_CASES = 512
# Elements (permutations x columns) of one batch's labels or products when batches grow (sequential test).
_BATCH_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`permutation_test`; arrays have the cell shape of the inputs."""

    difference: np.ndarray      # mean_A - mean_B per cell
    mean_a: np.ndarray
    mean_b: np.ndarray
    p_values: np.ndarray        # raw permutation p-values (of Welch's t) in (0, 1]; NaN where untestable
    q_values: np.ndarray        # adjusted p-values of ``fdr_method`` (equal to p_values when fdr=False)
    significant: np.ndarray     # bool: q_values < alpha
    n_a: int
    n_b: int
    n_permutations: int
    alpha: float
    fdr: bool
    seed: int
    statistic: np.ndarray | None = None   # Welch's t per cell
    q_values_by: np.ndarray | None = None  # Benjamini-Yekutieli q-values, always (beside BH)
    fdr_method: str = "bh"


@dataclass(frozen=True)
class _Cells:
    """The pooled cases of the cells still tested: standardised values, their squares, the counts
    (None without missing values) and the column totals that give cohort B's sums by subtraction."""

    values: np.ndarray
    squares: np.ndarray
    counts: np.ndarray | None
    total_sum: np.ndarray
    total_square: np.ndarray
    total_count: np.ndarray

    @classmethod
    def of(cls, pooled: np.ndarray, dtype) -> "_Cells":
        present = ~np.isnan(pooled)
        n = present.sum(axis=0)
        # Welch's t does not change when a cell is shifted and scaled: centring and scaling each cell
        # by its pooled mean and SD keeps the float32 sums of squares free of cancellation.
        with np.errstate(invalid="ignore", divide="ignore"):
            centre = np.where(n > 0, np.where(present, pooled, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)
            spread = np.sqrt(np.where(present, (pooled - centre) ** 2, 0.0).sum(axis=0) / np.maximum(n, 1))
        z = np.where(present, (pooled - centre) / np.where(spread > 0, spread, 1.0), 0.0)
        values, squares = z.astype(dtype), (z * z).astype(dtype)
        counts = None if present.all() else present.astype(dtype)
        return cls(values, squares, counts, z.sum(axis=0).astype(dtype), (z * z).sum(axis=0).astype(dtype),
                   n.astype(dtype))

    def subset(self, keep: np.ndarray) -> "_Cells":
        return _Cells(self.values[:, keep], self.squares[:, keep], None if self.counts is None else
                      self.counts[:, keep], self.total_sum[keep], self.total_square[keep], self.total_count[keep])

    def welch_t(self, labels: np.ndarray) -> np.ndarray:
        """``[P, cells]`` Welch's t of each labelling (``labels`` ``[P, n]``: 1 for cohort A, 0 for B).

        NaN where a side has fewer than two observations; 0 where both sides are constant and equal.
        """
        sums = labels @ np.concatenate([self.values, self.squares], axis=1)   # one product for both
        width = self.values.shape[1]
        sum_a, square_a = sums[:, :width], sums[:, width:]
        if self.counts is None:
            count_a = np.broadcast_to(labels.sum(axis=1, keepdims=True), sum_a.shape)
        else:
            count_a = labels @ self.counts
        count_b = self.total_count - count_a
        # In place where possible: at thousands of cells these element-wise steps cost more than the product.
        with np.errstate(invalid="ignore", divide="ignore"):
            sum_b = self.total_sum - sum_a
            mean_a, mean_b = sum_a / count_a, sum_b / count_b
            var_a = square_a - sum_a * mean_a                 # sums of squared deviations
            var_b = self.total_square - square_a
            var_b -= sum_b * mean_b
            np.maximum(var_a, 0, out=var_a)
            np.maximum(var_b, 0, out=var_b)
            var_a /= count_a * (count_a - 1)                  # squared standard errors of the means
            var_b /= count_b * (count_b - 1)
            var_a += var_b
            np.sqrt(var_a, out=var_a)
            mean_a -= mean_b
            t = np.divide(mean_a, var_a, out=mean_a)          # 0 / 0 (both sides constant and equal): t = 0
        t[np.isnan(t)] = 0.0
        if self.counts is not None or min(labels.sum(axis=1).min(), (labels.shape[1] - labels.sum(axis=1)).min()) < 2:
            t[(count_a < 2) | (count_b < 2)] = np.nan
        return t


def permutation_test(a: np.ndarray, b: np.ndarray, n_permutations: int = 1000, seed: int = 0,
                     alpha: float = 0.05, fdr: bool = True, batch_size: int = 250,
                     stop_at: int | None = None, fdr_method: str = "bh") -> PermutationResult:
    """Two-sided permutation test of equal cohort means (Welch's t), cell by cell.

    ``a``: ``[n_a, *cells]``, ``b``: ``[n_b, *cells]`` (same cell shape). Deterministic
    for a given ``seed``. ``stop_at``: sequential stopping at that many extreme permutations
    (module docstring). ``fdr_method``: "bh" or "by". Raises ``ValueError`` for mismatched
    shapes, an empty cohort, ``n_permutations < 1``, ``stop_at < 1`` or an unknown method.
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
    if fdr_method not in FDR_METHODS:
        raise ValueError(f"fdr_method must be one of {FDR_METHODS}, got {fdr_method!r}")
    cell_shape = a.shape[1:]
    n_a, n_b = len(a), len(b)
    pooled = np.concatenate([a.reshape(n_a, -1), b.reshape(n_b, -1)])   # [n, cells]
    membership = np.zeros(n_a + n_b)
    membership[:n_a] = 1.0
    mean_a, mean_b = _nan_mean(pooled[:n_a]), _nan_mean(pooled[n_a:])
    statistic = _Cells.of(pooled, np.float64).welch_t(membership[None, :])[0]
    # Permutations run in float32 (half the matrix-product time); the observed statistic is
    # recomputed the same way so that ties are judged at the same precision.
    cells32 = _Cells.of(pooled, np.float32)
    observed32 = cells32.welch_t(membership[None, :].astype(np.float32))[0]
    with np.errstate(invalid="ignore"):   # an infinite t (both sides constant, unequal) is its own threshold
        threshold = np.where(np.isinf(observed32), np.inf,
                             np.abs(observed32) - _TIE_TOLERANCE * np.maximum(1.0, np.abs(observed32)))

    counter = _ExtremeCounter(cells32, threshold, stop_at)
    sizes = _growing_batches(counter, n_a + n_b, batch_size) if stop_at is not None else None
    with closing(_label_batches(membership, n_permutations, batch_size, seed, sizes)) as batches:
        for labels in batches:
            if not counter.add(labels):
                break
    p_values = counter.p_values()
    p_values[np.isnan(statistic)] = np.nan
    q_bh, q_by = adjust(p_values, "bh"), adjust(p_values, "by")
    q_values = (q_bh if fdr_method == "bh" else q_by) if fdr else p_values.copy()
    with np.errstate(invalid="ignore"):
        significant = np.nan_to_num(q_values, nan=1.0) < alpha
    shape = lambda x: x.reshape(cell_shape)  # noqa: E731
    return PermutationResult(difference=shape(mean_a - mean_b), mean_a=shape(mean_a), mean_b=shape(mean_b),
                             p_values=shape(p_values), q_values=shape(q_values),
                             significant=shape(significant), n_a=n_a, n_b=n_b,
                             n_permutations=int(n_permutations), alpha=float(alpha), fdr=bool(fdr),
                             seed=int(seed), statistic=shape(statistic), q_values_by=shape(q_by),
                             fdr_method=fdr_method)


def _nan_mean(values: np.ndarray) -> np.ndarray:
    present = np.isfinite(values)
    n = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(present, values, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


class _ExtremeCounter:
    """Counts, per cell, the permutations at least as extreme as the observed t and the
    permutations with a statistic at all; with ``stop_at``, a cell leaves the count (and the
    matrix products) at its ``stop_at``-th extreme permutation, keeping p = stop_at / L."""

    def __init__(self, cells: _Cells, threshold: np.ndarray, stop_at: int | None):
        self.threshold, self.stop_at = threshold, stop_at
        n_cells = cells.values.shape[1]
        self.exceed, self.defined = np.zeros(n_cells), np.zeros(n_cells)
        self.stopped = np.full(n_cells, np.nan)          # p of the cells that stopped early
        self.active, self._subset = np.arange(n_cells), cells
        if stop_at is not None:  # a cell without an observed statistic is untestable: nothing to count
            self._drop(np.isnan(threshold))

    def add(self, labels: np.ndarray) -> bool:
        """Count one batch of labels; False once every cell has stopped."""
        cells = self.active
        permuted = self._subset.welch_t(labels)
        with np.errstate(invalid="ignore"):  # NaN compares False; such permutations are not counted
            extreme = np.abs(permuted) >= self.threshold[cells]
        defined = ~np.isnan(permuted)
        if self.stop_at is None:
            self.exceed[cells] += extreme.sum(axis=0)
            self.defined[cells] += defined.sum(axis=0)
            return True
        total = self.exceed[cells] + extreme.sum(axis=0)
        done = total >= self.stop_at
        # Running counts only of the cells that stop in this batch (a cumulative sum over all is slow).
        running = self.exceed[cells[done]] + np.cumsum(extreme[:, done], axis=0, dtype=np.int32)
        at = (running >= self.stop_at).argmax(axis=0)                # the row of the stop_at-th extreme one
        seen = self.defined[cells[done]] + np.cumsum(defined[:, done], axis=0, dtype=np.int32)[at, np.arange(
            int(done.sum()))]
        self.stopped[cells[done]] = self.stop_at / seen
        self.exceed[cells] = total
        self.defined[cells] += defined.sum(axis=0)
        self._drop(done)
        return len(self.active) > 0

    def _drop(self, leaving: np.ndarray) -> None:
        """Take the active cells flagged in ``leaving`` out of the products."""
        if not leaving.any():
            return
        keep = ~leaving
        self.active = self.active[keep]
        self._subset = self._subset.subset(keep)

    def p_values(self) -> np.ndarray:
        # A permutation that leaves one side of a cell without two observations has no statistic: it
        # is neither extreme nor not, so it drops out of the count (else it would shrink p).
        p = (1.0 + self.exceed) / (1.0 + self.defined)
        early = np.isfinite(self.stopped)
        p[early] = self.stopped[early]
        return p


def _label_batches(membership: np.ndarray, n_permutations: int, batch_size: int, seed: int,
                   next_size=None):
    """Shuffled labels ``[size, n]`` (float32, 1 = cohort A) in batches of ``batch_size``.

    Each row is a uniformly random assignment of the ``n_a`` cohort-A labels (``random_subsets``).
    Rows are drawn in order from two generators, so the labels do not depend on the batch size;
    ``next_size()`` (optional) may choose each following batch's size. A worker thread draws the
    next batch while the caller multiplies the previous one (both release the GIL).
    """
    bits, fixes = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    n_a = int(membership.sum())
    choose = next_size or (lambda: batch_size)

    def draw(size: int) -> np.ndarray:
        return random_subsets(bits, fixes, size, len(membership), n_a).astype(np.float32)

    with ThreadPoolExecutor(max_workers=1) as worker:
        drawn = min(batch_size, n_permutations)
        pending = worker.submit(draw, drawn)
        while pending is not None:
            labels = pending.result()
            following = min(max(int(choose()), 1), n_permutations - drawn)
            pending = worker.submit(draw, following) if following > 0 else None
            drawn += following
            yield labels


def _growing_batches(counter: "_ExtremeCounter", n_cases: int, batch_size: int):
    """Batch sizes for the sequential test: once few cells are still active, a batch of
    ``batch_size`` permutations is mostly overhead (hundreds of thousands of them for many cells),
    so batches grow while labels (batch x cases) and products (batch x active cells) stay within
    what one batch of ``batch_size`` over ``_BATCH_ELEMENTS / batch_size`` columns costs."""
    def size() -> int:
        columns = max(len(counter.active), n_cases, 1)
        return int(min(max(batch_size, _BATCH_ELEMENTS // columns), 64 * batch_size))
    return size


def random_subsets(bits: np.random.Generator, fixes: np.random.Generator, size: int, n: int,
                   k: int) -> np.ndarray:
    """``[size, n]`` booleans, each row a uniformly random subset of exactly ``k`` of ``n`` positions.

    A Fisher-Yates shuffle costs a bounded random integer per position (≈ 20 ns; at 20,000 cases
    and 13,000 permutations that was most of the test). Here each position costs one random byte:
    a row starts as independent Bernoulli(t/256) picks, whose set, given its size m, is uniform
    among the m-subsets; removing m - k of its members (or adding k - m non-members), chosen
    uniformly, leaves every k-subset equally likely (the whole procedure is symmetric in the
    positions and ends with k). Only ≈ sqrt(n) positions per row need a second draw.

    That second draw is a Python step per row (≈ 10 µs): for the hundreds of thousands of
    permutations that many cells need, it dominated small cohorts. Up to ``_PARTITION_CASES``
    cases a row is instead the k smallest of n uniform keys (``argpartition``, vectorised).
    """
    if n <= _PARTITION_CASES:
        chosen = np.zeros((size, n), dtype=bool)
        if 0 < k < n:
            nearest = np.argpartition(bits.random((size, n)), k - 1, axis=1)[:, :k]
            np.put_along_axis(chosen, nearest, True, axis=1)
        else:
            chosen[:] = k == n
        return chosen
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


def permutations_for_fdr(n_cells: int, alpha: float = 0.05, floor: int = 1000, cap: int = 10_000_000,
                         method: str = "bh") -> int:
    """Permutations needed so that a few cells can pass the FDR correction at ``alpha`` among ``n_cells``.

    The smallest permutation p-value is ``1 / (P + 1)``; after Benjamini-Hochberg over ``m``
    cells a lone strong cell gets ``q = m / (P + 1)``, after Benjamini-Yekutieli ``m H(m) / (P + 1)``
    (``H(m) = 1 + 1/2 + ... + 1/m``). So ``P`` must reach ``m / alpha`` (times ``H(m)``); twice that
    leaves room for a few discoveries. Rounded up to thousands, within ``[floor, cap]``. The count
    grows with the cells (117 x 119 cells at 0.05: 557,000 for BH); run it with ``stop_at``, which
    keeps only the cells that can pass the test in the products after the first thousand or so.
    """
    m = max(int(n_cells), 1)
    harmonic = float(np.sum(1.0 / np.arange(1, m + 1))) if method == "by" else 1.0
    needed = 2.0 * m * harmonic / max(float(alpha), 1e-6)
    return int(min(max(np.ceil(needed / 1000.0) * 1000, floor), cap))


def adjust(p_values: np.ndarray, method: str = "bh") -> np.ndarray:
    """FDR-adjusted p-values (q-values) of the finite entries, "bh" or "by"; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = false_discovery_control(p[finite], method=method)
    return q


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values) of the finite entries; NaN stays NaN."""
    return adjust(p_values, "bh")
