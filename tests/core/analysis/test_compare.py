"""Permutation test of two cohorts' mean matrices (agg2exp_core.analysis.compare) and matrix orders."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core.analysis.compare import benjamini_hochberg, permutation_test, permutations_for_fdr
from agg2exp_core.analysis.ordering import cluster_order, group_order


def _cohort(rng, n, shape=(5, 6)):
    return rng.dirichlet(np.ones(shape[1]) * 5, size=(n, shape[0]))


def test_identical_cohorts_have_no_significant_cell():
    rng = np.random.default_rng(1)
    a = _cohort(rng, 20)
    result = permutation_test(a, a.copy(), n_permutations=300, seed=0, fdr=False)
    assert not result.significant.any()
    assert np.allclose(result.p_values, 1.0)
    assert np.allclose(result.difference, 0.0)


def test_same_distribution_gives_no_significant_cell_with_fdr():
    rng = np.random.default_rng(2)
    result = permutation_test(_cohort(rng, 30), _cohort(rng, 25), n_permutations=500, seed=3, fdr=True)
    assert not result.significant.any()


def test_planted_shift_is_found_and_only_there():
    rng = np.random.default_rng(3)
    a, b = _cohort(rng, 40), _cohort(rng, 40)
    a[:, 2, 4] += 0.15
    result = permutation_test(a, b, n_permutations=1000, seed=0, fdr=True, alpha=0.05)
    assert result.significant[2, 4]
    assert result.significant.sum() <= 2
    assert result.difference[2, 4] == pytest.approx(a[:, 2, 4].mean() - b[:, 2, 4].mean())
    assert result.p_values[2, 4] == pytest.approx(1 / 1001)


def test_p_values_lie_in_zero_one_and_are_seeded():
    rng = np.random.default_rng(4)
    a, b = _cohort(rng, 12), _cohort(rng, 9)
    first = permutation_test(a, b, n_permutations=200, seed=7)
    again = permutation_test(a, b, n_permutations=200, seed=7)
    assert np.all((first.p_values > 0) & (first.p_values <= 1))
    assert np.all((first.q_values > 0) & (first.q_values <= 1))
    assert np.array_equal(first.p_values, again.p_values)
    assert first.p_values.min() >= 1 / 201


def test_missing_values_are_left_out_and_untestable_cells_are_nan():
    rng = np.random.default_rng(5)
    a, b = _cohort(rng, 15), _cohort(rng, 15)
    a[:3, 0, 0] = np.nan
    b[:, 1, 1] = np.nan
    result = permutation_test(a, b, n_permutations=100, seed=0)
    assert result.mean_a[0, 0] == pytest.approx(np.nanmean(a[:, 0, 0]))
    assert np.isnan(result.p_values[1, 1]) and not result.significant[1, 1]
    finite = result.p_values[np.isfinite(result.p_values)]
    assert np.all((finite > 0) & (finite <= 1))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        permutation_test(np.zeros((3, 2, 2)), np.zeros((3, 2, 3)))
    with pytest.raises(ValueError):
        permutation_test(np.zeros((0, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        permutation_test(np.zeros((3, 2)), np.zeros((3, 2)), n_permutations=0)


def test_benjamini_hochberg_matches_scipy_and_keeps_nan():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    q = benjamini_hochberg(p)
    assert np.isnan(q[2])
    assert np.allclose(q[[0, 1, 3, 4]], [0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_group_order_and_cluster_order():
    assert group_order(["bone", "cardiovascular", "organ", "bone", "pathology"]) == [1, 2, 0, 3, 4]
    m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.9, 0.1, 0.0], [0.0, 0.9, 1.0]])
    tree = cluster_order(m, axis=0)
    assert sorted(tree.order) == [0, 1, 2, 3]
    pos = {leaf: i for i, leaf in enumerate(tree.order)}
    assert abs(pos[0] - pos[2]) == 1 and abs(pos[1] - pos[3]) == 1
    assert len(tree.icoord) == 3
    assert cluster_order(m[:2], axis=0).order == [0, 1]


def test_permutations_for_fdr_allow_a_discovery():
    n = permutations_for_fdr(323, 0.05)
    assert n == 13000 and 323 / (n + 1) < 0.05
    assert permutations_for_fdr(4, 0.05) == 1000 and permutations_for_fdr(10**8, 0.01) == 10_000_000
    # TotalSegmentator's 117 x 119 cells: the count scales past the old 20,000 cap, for BY by H(m) more
    cells = 117 * 119
    bh, by = permutations_for_fdr(cells, 0.05), permutations_for_fdr(cells, 0.05, method="by")
    harmonic = np.sum(1 / np.arange(1, cells + 1))
    assert cells / (bh + 1) < 0.05 / 2 and cells * harmonic / (by + 1) < 0.05 / 2 and by > 9 * bh


def test_permutations_without_a_statistic_do_not_count_as_not_extreme():
    """A cell observed twice in each cohort: only the rare permutations that leave two observations
    on each side give a t; all the others give none (NaN). Counting those as "not extreme" made p
    tiny (significant) where the test has almost no evidence. A cell observed once on a side has
    no variance there: no t at all, p = NaN (untestable)."""
    n_a, n_b = 100, 2
    a, b = np.full((n_a, 3), np.nan), np.full((n_b, 3), np.nan)
    a[:2, 0], b[:, 0] = [0.9, 0.91], [0.1, 0.11]
    a[0, 2], b[0, 2] = 0.9, 0.1
    a[:, 1] = np.random.default_rng(0).random(n_a)   # a fully observed cell for comparison
    b[:, 1] = 0.5
    result = permutation_test(a, b, n_permutations=4000, seed=0, fdr=False)
    assert result.difference[0] == pytest.approx(0.8)
    assert result.p_values[0] > 0.2 and not result.significant[0]
    assert 0 < result.p_values[1] <= 1
    assert result.difference[2] == pytest.approx(0.8) and np.isnan(result.p_values[2])


def test_random_subsets_have_k_members_and_every_subset_is_equally_likely():
    """The labels of a permutation: exactly k of n per row, each of the C(n, k) subsets with
    probability 1 / C(n, k) (chi-square over 12,000 rows), also for k near 0, n / 2 and n."""
    from itertools import combinations

    from scipy.stats import chisquare

    from agg2exp_core.analysis.compare import random_subsets

    for n, k in [(6, 1), (6, 3), (7, 5), (6, 6), (6, 0)]:
        rows = random_subsets(np.random.default_rng(n), np.random.default_rng(k + 100), 12000, n, k)
        assert rows.shape == (12000, n) and np.all(rows.sum(axis=1) == k)
        subsets = list(combinations(range(n), k))
        if len(subsets) == 1:
            continue
        code = rows.astype(np.int64) @ (1 << np.arange(n))
        observed = np.array([np.sum(code == sum(1 << i for i in s)) for s in subsets])
        assert observed.sum() == 12000
        assert chisquare(observed).pvalue > 1e-3, (n, k, observed)
    # Beyond _PARTITION_CASES the rows come from Bernoulli picks and a fix-up: with k = 1 (or n - 1)
    # a subset is one position (left out), so position counts test full uniformity
    for n, k in [(600, 1), (600, 599)]:
        rows = random_subsets(np.random.default_rng(n), np.random.default_rng(k), 60000, n, k)
        assert np.all(rows.sum(axis=1) == k)
        counts = (rows if k == 1 else ~rows).sum(axis=0)
        assert chisquare(counts).pvalue > 1e-3, (n, k)


def test_labels_do_not_depend_on_the_batch_size():
    from agg2exp_core.analysis.compare import _label_batches

    membership = np.zeros(37)
    membership[:15] = 1
    small = np.concatenate(list(_label_batches(membership, 100, 7, seed=4)))
    large = np.concatenate(list(_label_batches(membership, 100, 64, seed=4)))
    assert np.array_equal(small, large) and np.all(small.sum(axis=1) == 15)


def test_p_values_match_the_exact_permutation_distribution():
    """Known answer: with 5 + 4 cases there are C(9, 5) = 126 partitions; the Monte Carlo
    p-value must approach the fraction of partitions whose Welch t (SciPy's) is at least as
    extreme as the observed one."""
    from itertools import combinations

    from scipy.stats import ttest_ind

    rng = np.random.default_rng(6)
    a, b = rng.normal(0.8, 1.0, size=(5, 3)), rng.normal(0.0, 1.0, size=(4, 3))
    pooled = np.concatenate([a, b])
    observed = np.abs(ttest_ind(a, b, equal_var=False).statistic)
    extreme = np.zeros(3)
    for chosen in combinations(range(9), 5):
        inside = np.isin(np.arange(9), chosen)
        extreme += np.abs(ttest_ind(pooled[inside], pooled[~inside], equal_var=False).statistic) >= observed - 1e-9
    exact = extreme / 126
    result = permutation_test(a, b, n_permutations=20000, seed=1, fdr=False)
    assert np.all(np.abs(result.p_values - exact) < 0.012), (result.p_values, exact)


def _extreme_rows(a, b, n_permutations, seed):
    """Per permutation (in the test's own label stream) and cell: at least as extreme as observed."""
    from agg2exp_core.analysis.compare import _label_batches

    from scipy.stats import ttest_ind

    pooled = np.concatenate([a, b]).reshape(len(a) + len(b), -1)
    membership = np.r_[np.ones(len(a)), np.zeros(len(b))]
    labels = np.concatenate(list(_label_batches(membership, n_permutations, 97, seed))).astype(bool)
    sides = np.argsort(~labels, axis=1, kind="stable")               # each row: A's cases, then B's
    t = ttest_ind(pooled[sides[:, :len(a)]], pooled[sides[:, len(a):]], axis=1, equal_var=False).statistic
    observed = np.abs(ttest_ind(a.reshape(len(a), -1), b.reshape(len(b), -1), equal_var=False).statistic)
    return np.abs(t) >= observed - 1e-5 * np.maximum(1, observed)


def test_sequential_stop_gives_besag_clifford_p_values():
    """With stop_at=h a cell stops at its h-th extreme permutation, the L-th: p = h / L; a cell that
    never reaches h keeps the full count, so a strong cell's p is the same as without stopping."""
    rng = np.random.default_rng(4)
    a, b = rng.random((30, 3, 4)), rng.random((25, 3, 4))
    a[:, 0, 0] += 0.4                                     # one strong cell
    n, h = 3000, 10
    full = permutation_test(a, b, n_permutations=n, seed=5, fdr=False, batch_size=128)
    sequential = permutation_test(a, b, n_permutations=n, seed=5, fdr=False, batch_size=128, stop_at=h)
    extreme = _extreme_rows(a, b, n, seed=5)
    hits = np.cumsum(extreme, axis=0)
    expected = np.where(hits[-1] >= h, h / (np.argmax(hits >= h, axis=0) + 1.0), (1 + hits[-1]) / (1 + n))
    assert np.allclose(sequential.p_values.ravel(), expected)
    assert sequential.p_values[0, 0] == full.p_values[0, 0] == pytest.approx(1 / (n + 1))
    # the cells that stopped early have p close to the full count's (relative error ~ 1/sqrt(h))
    stopped = hits[-1] >= h
    assert stopped.sum() >= 8 and not stopped[0]
    assert np.allclose(sequential.p_values.ravel()[stopped], full.p_values.ravel()[stopped], rtol=0.8)
    with pytest.raises(ValueError, match="stop_at"):
        permutation_test(a, b, stop_at=0)


def test_sequential_stop_keeps_missing_values_and_untestable_cells():
    rng = np.random.default_rng(6)
    a, b = rng.random((12, 2, 2)), rng.random((10, 2, 2))
    a[:, 1, 1] = np.nan                                    # untestable: no observation in A
    a[:5, 0, 1] = np.nan                                   # partly missing
    full = permutation_test(a, b, n_permutations=800, seed=2, fdr=False)
    sequential = permutation_test(a, b, n_permutations=800, seed=2, fdr=False, stop_at=800)  # never reached
    assert np.isnan(sequential.p_values[1, 1]) and np.isnan(full.p_values[1, 1])
    assert np.allclose(sequential.p_values, full.p_values, equal_nan=True)


def test_unequal_variances_keep_the_false_positive_rate():
    """Equal means, 10 cases of SD 0.03 against 60 of SD 0.01 (an external cohort against a
    reference), 1,000 independent null cells: the share with p < 0.05 is 5 % within Monte-Carlo
    error (3 SD of a binomial over 1,000 cells: +-0.021). Permuting the raw difference of means
    gave 35 % here; the studentised statistic is what makes the test about the means."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.1, 0.03, size=(10, 1000)), rng.normal(0.1, 0.01, size=(60, 1000))
    result = permutation_test(a, b, n_permutations=2000, seed=1, fdr=False, batch_size=1000)
    rate = float((result.p_values < 0.05).mean())
    assert abs(rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 1000), rate
    # the reverse imbalance (the small cohort is the precise one) stays valid (here conservative, 3 %)
    reverse = permutation_test(rng.normal(0.1, 0.01, size=(10, 1000)), rng.normal(0.1, 0.03, size=(60, 1000)),
                               n_permutations=2000, seed=2, fdr=False, batch_size=1000)
    assert float((reverse.p_values < 0.05).mean()) < 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000)


def test_power_on_a_planted_difference_matches_welchs_t_test():
    """A shift of one SD of the small, noisy cohort: the permutation test rejects about as often as
    SciPy's parametric Welch test on the same cells (within 3 binomial SD), and in most cells."""
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.13, 0.03, size=(10, 1000)), rng.normal(0.1, 0.01, size=(60, 1000))
    result = permutation_test(a, b, n_permutations=2000, seed=4, fdr=False, batch_size=1000)
    power = float((result.p_values < 0.05).mean())
    parametric = float((ttest_ind(a, b, equal_var=False).pvalue < 0.05).mean())
    assert power > 0.7 and abs(power - parametric) < 3 * np.sqrt(0.25 / 1000), (power, parametric)
    assert np.allclose(result.statistic, ttest_ind(a, b, equal_var=False).statistic)


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_many_cells_can_pass_bh_and_by_with_a_scaled_permutation_count():
    """117 x 119 cells (TotalSegmentator), 15 + 15 cases, a strong shift planted in 4 cells: with the
    count that ``permutations_for_fdr`` scales with cells / alpha and the sequential stop, BH and BY
    reject exactly those cells. With the old cap of 20,000 the smallest q was 13,923 / 20,001 > 0.05."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.5, 0.1, size=(15, 117, 119)), rng.normal(0.5, 0.1, size=(15, 117, 119))
    planted = [(0, 0), (40, 7), (80, 100), (116, 118)]
    for i, j in planted:
        a[:, i, j] += 0.5
    truth = np.zeros((117, 119), dtype=bool)
    truth[tuple(np.array(planted).T)] = True
    for method in ("bh", "by"):
        n = permutations_for_fdr(117 * 119, 0.05, method=method)
        assert n > 20000
        result = permutation_test(a, b, n_permutations=n, seed=6, fdr=True, fdr_method=method, stop_at=20,
                                  batch_size=1000)
        assert np.array_equal(result.significant, truth), (method, np.argwhere(result.significant))
        assert result.fdr_method == method and (result.q_values_by >= result.q_values - 1e-12).all()
    old = permutation_test(a, b, n_permutations=20000, seed=6, fdr=True, stop_at=20, batch_size=1000)
    assert not old.significant.any()
    with pytest.raises(ValueError, match="fdr_method"):
        permutation_test(a[:, :1, :1], b[:, :1, :1], fdr_method="holm")
