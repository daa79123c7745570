"""Coverage of the causal method's intervals, simulated with a linear model whose effects are known.

Replacing region r by donor k changes the summed class logit by ``sum_r w (x - d_k)``, so the
ATE over the donor pool is known exactly. The class's summed logit is large (an offset of 100
per voxel, as real summed logits are): a stopping rule relative to it stopped after 3 donors and
``ATE ± 1.96 SE`` covered 79 % (sum over regions, SEs in quadrature: 84 %).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agg2exp_core.attribution.causal import MIN_DONORS, causal_run, effect_interval, summed_effects

SHAPE = (4, 4, 2)
REPETITIONS = 200
LEVEL = 0.95
MC_ERROR = 3 * np.sqrt(LEVEL * (1 - LEVEL) / REPETITIONS)


class OffsetLinear(torch.nn.Module):
    """Class 1 logit = w * x + 100 everywhere (always predicted), class 0 = -1e3."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        return torch.cat([torch.full_like(x, -1e3), self.w * x + 100.0], dim=1)


@pytest.fixture(scope="module")
def simulation():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    w, image = torch.rand(SHAPE, generator=g) + 0.5, torch.rand(1, *SHAPE, generator=g)
    partition = np.zeros(SHAPE, dtype=int)
    partition[2:] = 1
    levels = np.clip(np.random.default_rng(0).gamma(2.0, 0.15, size=200), 0, 0.95)   # skewed donor intensities
    donors = [torch.full((1, *SHAPE), float(a)) + 0.05 * torch.rand(1, *SHAPE, generator=g) for a in levels]
    pool = torch.stack([d[0] for d in donors]).numpy()
    truth = np.array([(w.numpy() * (image[0].numpy() - pool.mean(0)))[partition == r].sum() for r in (0, 1)])
    runs = [causal_run(OffsetLinear(w), image, [1], partition=partition, roi_size=None, donor="images",
                       donors=donors, seed=rep) for rep in range(REPETITIONS)]
    return runs, truth


def test_effect_intervals_cover_at_their_level(simulation):
    runs, truth = simulation
    covered = []
    for result in runs:
        low, high = effect_interval(result.ate[0], result.se[0], result.n, LEVEL)
        covered.append((low <= truth) & (truth <= high))
    coverage = np.mean(covered, axis=0)
    assert all(result.n.min() >= MIN_DONORS for result in runs)
    assert np.all(np.abs(coverage - LEVEL) < MC_ERROR), coverage


def test_the_sum_over_regions_takes_its_se_from_per_donor_sums(simulation):
    runs, truth = simulation
    covered = []
    for result in runs:
        ate, se, n = summed_effects(result, np.array([0, 1]))
        low, high = effect_interval(ate, se, n, LEVEL)
        covered.append(low[0] <= truth.sum() <= high[0])
        # both regions move with the donor's level: their effects are positively correlated
        assert se[0] > np.sqrt((result.se[0] ** 2).sum())
    assert abs(np.mean(covered) - LEVEL) < MC_ERROR, np.mean(covered)


def test_interval_known_answers():
    low, high = effect_interval(np.array([1.0, 1.0, 2.0]), np.array([0.5, 0.0, 1.0]), np.array([10, 1, 1]))
    assert low[0] == pytest.approx(1.0 - 2.262157 * 0.5, rel=1e-6) and high[0] == pytest.approx(1 + 1.131078, rel=1e-6)
    assert low[1] == high[1] == 1.0                                     # deterministic donor: SE 0
    assert np.isnan(low[2]) and np.isnan(high[2])                       # one donor: no interval
