"""Bootstrap intervals over patients: known answers, coverage, NaN handling, differences."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core.analysis import uncertainty
from agg2exp_core.analysis.uncertainty import BootstrapConfig


def test_resample_weights_are_multinomial_counts():
    weights = uncertainty.resample_weights(7, 200, np.random.default_rng(0))
    assert weights.shape == (200, 7) and np.all(weights.sum(axis=1) == 7)
    assert weights.mean() == pytest.approx(1.0)


def test_constant_cells_have_a_point_interval_and_the_estimate_is_the_mean():
    values = np.stack([np.full((2, 3), 0.25), np.full((2, 3), 0.25), np.full((2, 3), 0.25)])
    interval = uncertainty.bootstrap_mean(values, BootstrapConfig(n_boot=50))
    assert interval.estimate.shape == (2, 3)
    assert np.allclose(interval.estimate, 0.25) and np.allclose(interval.low, 0.25) and np.allclose(interval.high, 0.25)


def test_intervals_cover_the_true_mean_about_as_often_as_promised():
    rng = np.random.default_rng(1)
    hits = []
    for repeat in range(60):
        values = rng.exponential(1.0, size=(40, 5))            # skewed, true mean 1
        interval = uncertainty.bootstrap_mean(values, BootstrapConfig(n_boot=400, level=0.9, seed=repeat))
        hits.append((interval.low <= 1.0) & (1.0 <= interval.high))
    assert 0.8 <= np.mean(hits) <= 0.97


def test_width_shrinks_like_one_over_root_n_and_missing_values_count_out():
    rng = np.random.default_rng(2)
    small = uncertainty.bootstrap_mean(rng.normal(size=(25, 1)), BootstrapConfig(n_boot=500))
    large = uncertainty.bootstrap_mean(rng.normal(size=(400, 1)), BootstrapConfig(n_boot=500))
    ratio = (small.high - small.low)[0] / (large.high - large.low)[0]
    assert 2.5 < ratio < 6                                     # sqrt(400 / 25) = 4
    values = rng.normal(size=(30, 2))
    values[:20, 1] = np.nan
    interval = uncertainty.bootstrap_mean(values, BootstrapConfig(n_boot=200))
    assert list(interval.n) == [30, 10]
    assert interval.estimate[1] == pytest.approx(np.nanmean(values[:, 1]))
    assert (interval.high - interval.low)[1] > (interval.high - interval.low)[0]


def test_difference_interval_excludes_zero_for_a_real_difference_only():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, size=(60, 2)), rng.normal(0.0, 1.0, size=(50, 2))
    b[:, 1] += 1.0
    interval = uncertainty.bootstrap_difference(a, b, BootstrapConfig(n_boot=500))
    assert interval.low[0] > 0 and interval.low[1] < 0 < interval.high[1]
    with pytest.raises(ValueError, match="cell shapes"):
        uncertainty.bootstrap_difference(a, b[:, :1])


def test_deterministic_for_a_seed_and_bad_settings_refused():
    values = np.random.default_rng(4).normal(size=(20, 3))
    first = uncertainty.bootstrap_mean(values, BootstrapConfig(n_boot=100, seed=9))
    second = uncertainty.bootstrap_mean(values, BootstrapConfig(n_boot=100, seed=9))
    assert np.array_equal(first.low, second.low)
    with pytest.raises(ValueError):
        BootstrapConfig(level=1.5)
    with pytest.raises(ValueError):
        BootstrapConfig(n_boot=3)


def test_context_values_read_each_target_at_its_own_column():
    cube = np.zeros((2, 2, 3))
    cube[:, 0, 1], cube[:, 1, 2] = 0.75, 0.5                   # targets 5 and 7 at sources 5 and 7
    targets, values = uncertainty.context_values(cube, [5, 7], [3, 5, 7])
    assert targets == [5, 7] and np.allclose(values, [[0.25, 0.5], [0.25, 0.5]])


@pytest.mark.parametrize("missing", [False, True])
def test_resampled_means_equal_a_straightforward_resampling(missing):
    """The product form (resample counts @ values) gives, resample by resample, the NaN-aware mean
    of the values gathered at the drawn patients (same draws: ``integers(0, n)`` per batch)."""
    rng = np.random.default_rng(7)
    values = rng.normal(size=(23, 4))
    if missing:
        values[:9, 2] = np.nan
    config = BootstrapConfig(n_boot=uncertainty.BATCH + 30, seed=5)
    fast = uncertainty._resampled_means(values, config, np.random.default_rng(5))
    reference_rng, reference = np.random.default_rng(5), []
    for start in range(0, config.n_boot, uncertainty.BATCH):
        draws = reference_rng.integers(0, len(values), size=(min(uncertainty.BATCH, config.n_boot - start), len(values)))
        reference += [np.nanmean(values[patients], axis=0) for patients in draws]
    assert fast.shape == (config.n_boot, 4)
    np.testing.assert_allclose(fast, np.array(reference), rtol=1e-5, atol=1e-6)


def test_studentized_intervals_cover_skewed_cells_at_n_32_better_than_percentile():
    """2,000 independent skewed cells (Beta(0.3, 3): most masses near 0, a few high; true mean
    0.3 / 3.3), 32 patients, nominal 95 %: the studentised interval covers within 2 points of 95 %
    (Monte-Carlo SD 0.5 points); the percentile interval covered 91 % here, the issue's 90 %."""
    rng = np.random.default_rng(11)
    values, truth = rng.beta(0.3, 3.0, size=(32, 2000)), 0.3 / 3.3
    coverage = {}
    for method in ("studentized", "percentile"):
        interval = uncertainty.bootstrap_mean(values, BootstrapConfig(n_boot=1000, seed=1, method=method))
        coverage[method] = float(((interval.low <= truth) & (truth <= interval.high)).mean())
    assert abs(coverage["studentized"] - 0.95) < 0.02, coverage
    assert coverage["studentized"] > coverage["percentile"] + 0.015, coverage


def test_studentized_difference_covers_skewed_cells_with_unequal_cohorts():
    """mean(a) - mean(b) of skewed cells, 12 vs 40 patients: coverage close to 95 % (within 3 points),
    better than the percentile interval's."""
    rng = np.random.default_rng(12)
    a, b = rng.exponential(1.0, size=(12, 1500)), rng.exponential(0.5, size=(40, 1500))
    coverage = {}
    for method in ("studentized", "percentile"):
        interval = uncertainty.bootstrap_difference(a, b, BootstrapConfig(n_boot=1000, seed=2, method=method))
        coverage[method] = float(((interval.low <= 0.5) & (0.5 <= interval.high)).mean())
    assert abs(coverage["studentized"] - 0.95) < 0.03 and coverage["studentized"] > coverage["percentile"], coverage
    with pytest.raises(ValueError, match="method"):
        BootstrapConfig(method="bca")
