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
    assert permutations_for_fdr(4, 0.05) == 1000 and permutations_for_fdr(10**6, 0.01) == 20000


def test_permutations_without_a_statistic_do_not_count_as_not_extreme():
    """A cell observed once in each cohort: every permutation that keeps the two observations
    apart gives the same |difference|, all the others give none (NaN). Counting those as
    "not extreme" made p about 0.02 (significant) where the test has no evidence: p = 1."""
    n_a, n_b = 100, 1
    a, b = np.full((n_a, 2), np.nan), np.full((n_b, 2), np.nan)
    a[0, 0], b[0, 0] = 0.9, 0.1
    a[:, 1] = np.random.default_rng(0).random(n_a)   # a fully observed cell for comparison
    b[:, 1] = 0.5
    result = permutation_test(a, b, n_permutations=2000, seed=0, fdr=False)
    assert result.difference[0] == pytest.approx(0.8)
    assert result.p_values[0] == 1.0 and not result.significant[0]
    assert 0 < result.p_values[1] <= 1


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


def test_labels_do_not_depend_on_the_batch_size():
    from agg2exp_core.analysis.compare import _label_batches

    membership = np.zeros(37)
    membership[:15] = 1
    small = np.concatenate(list(_label_batches(membership, 100, 7, seed=4)))
    large = np.concatenate(list(_label_batches(membership, 100, 64, seed=4)))
    assert np.array_equal(small, large) and np.all(small.sum(axis=1) == 15)


def test_p_values_match_the_exact_permutation_distribution():
    """Known answer: with 5 + 4 cases there are C(9, 5) = 126 partitions; the Monte Carlo
    p-value must approach the fraction of partitions at least as extreme as the observed one."""
    from itertools import combinations

    rng = np.random.default_rng(6)
    a, b = rng.normal(0.8, 1.0, size=(5, 3)), rng.normal(0.0, 1.0, size=(4, 3))
    pooled = np.concatenate([a, b])
    observed = np.abs(a.mean(axis=0) - b.mean(axis=0))
    extreme = np.zeros(3)
    for chosen in combinations(range(9), 5):
        inside = np.isin(np.arange(9), chosen)
        extreme += np.abs(pooled[inside].mean(axis=0) - pooled[~inside].mean(axis=0)) >= observed - 1e-9
    exact = extreme / 126
    result = permutation_test(a, b, n_permutations=20000, seed=1, fdr=False)
    assert np.all(np.abs(result.p_values - exact) < 0.012), (result.p_values, exact)


def _extreme_rows(a, b, n_permutations, seed):
    """Per permutation (in the test's own label stream) and cell: at least as extreme as observed."""
    from agg2exp_core.analysis.compare import _label_batches

    pooled = np.concatenate([a, b]).reshape(len(a) + len(b), -1)
    membership = np.r_[np.ones(len(a)), np.zeros(len(b))]
    labels = np.concatenate(list(_label_batches(membership, n_permutations, 97, seed))).astype(float)
    diff = labels @ pooled / len(a) - (1 - labels) @ pooled / len(b)
    observed = a.reshape(len(a), -1).mean(axis=0) - b.reshape(len(b), -1).mean(axis=0)
    return np.abs(diff) >= np.abs(observed) - 1e-6 * np.maximum(1, np.abs(observed))


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
