"""Agreement between methods: rank correlation of paired rows and the cells where they disagree."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core.analysis import agreement
from agg2exp_core.vocabulary import AVERAGE_TARGET


def test_row_spearman_known_answers():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 1.0, 1.0], [np.nan, 1, 2, 3]])
    b = np.array([[10.0, 20.0, 30.0, 40.0], [0.4, 0.3, 0.2, 0.1], [1.0, 2.0, 3.0, 4.0], [1.0, 2, 3, 4]])
    rho = agreement.row_spearman(a, b)
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0)
    assert np.isnan(rho[2]) and np.isnan(rho[3])              # a constant row; a missing value


def test_agreement_and_disagreement_of_two_cubes():
    rng = np.random.default_rng(0)
    a = rng.dirichlet([5] * 6, size=(20, 3))
    b = a.copy()
    b[:, 2] = 1.0 - a[:, 2]                                     # the third class ranks sources the other way
    summary = agreement.agreement(a, b, [4, 5, 6])
    rho = dict(zip(summary.target_id, summary.spearman_mean))
    assert rho[4] == pytest.approx(1.0) and rho[5] == pytest.approx(1.0) and rho[6] == pytest.approx(-1.0)
    pooled = summary.set_index("target_id").loc[AVERAGE_TARGET]
    assert pooled.spearman_low <= pooled.spearman_mean <= pooled.spearman_high and pooled.n_cases == 20
    cells = agreement.disagreement(a, b, [4, 5, 6], list(range(6)))
    worst = cells.sort_values("mean_abs_difference", ascending=False).iloc[0]
    assert worst.target_id == 6 and cells[cells.target_id == 4].mean_abs_difference.max() == 0
