"""Recovery of a known subgroup among reported slices (rank, precision, recall) and the redrawn-metadata null."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agg2exp_core.analysis.slice_recovery import null_rate, recovery
from agg2exp_core.analysis.slices import SLICE_COLUMNS, SliceConfig, SliceResult, empty_cells
from agg2exp_core.io.phantoms.planted import draw_metadata
from tests.support.planted_slices import null_inputs


def _result(slices: list[tuple[int, int, int, set[str]]]) -> SliceResult:
    """(slice_id, class_id, rank, members) -> a SliceResult as the search returns it."""
    rows = [[sid, cls, "metadata", f"slice {sid}", len(m), len(m), 0.1, 1e-4, 1e-3, True, rank, 0.7, 0.8, 4.0]
            for sid, cls, rank, m in slices]
    members = [(sid, c) for sid, _, _, m in slices for c in sorted(m)]
    return SliceResult(pd.DataFrame(rows, columns=SLICE_COLUMNS), pd.DataFrame(members, columns=["slice_id", "case_id"]),
                       empty_cells(), 10, pd.DataFrame())


def test_recovery_finds_the_best_matching_slice_with_its_rank_precision_and_recall():
    result = _result([(1, 5, 1, {"a", "b", "c", "x"}), (2, 5, 2, {"d", "e", "f", "g"}),
                      (3, 7, 1, {"d", "e", "f", "g", "h"})])           # another class's exact match is not counted
    found = recovery(result, 5, {"d", "e", "f", "g", "h"})
    assert (found.rank, found.slice_id, found.n_slices) == (2, 2, 2)
    assert found.precision == 1.0 and found.recall == pytest.approx(0.8) and found.jaccard == pytest.approx(0.8)
    assert found.top(3) and not found.top(1)
    assert recovery(result, 7, {"d", "e", "f", "g", "h"}).top(1)


def test_recovery_says_not_found_below_half_overlap_or_without_slices():
    result = _result([(1, 5, 1, {"a", "b", "c", "d"})])
    missed = recovery(result, 5, {"d", "e", "f", "g"})                # Jaccard 1/7
    assert missed.rank is None and not missed.top(3) and missed.jaccard == pytest.approx(1 / 7)
    assert recovery(result, 9, {"a"}).rank is None and recovery(result, 9, {"a"}).n_slices == 0


def test_null_rate_of_independent_metadata_is_at_the_level_and_a_dependent_draw_is_always_found():
    inputs = null_inputs(90, classes=3, seed=11)
    independent = lambda rng, n: pd.DataFrame(draw_metadata(rng, n))   # noqa: E731
    rate, se = null_rate(inputs, independent, 40, SliceConfig(cluster_counts=()), seed=1)
    assert se == pytest.approx(np.sqrt(rate * (1 - rate) / 40))
    assert rate <= 0.05 + 3 * max(se, np.sqrt(0.05 * 0.95 / 40))       # the search's level, within MC error
    worst = inputs.dice[1].to_numpy() < np.quantile(inputs.dice[1], 0.25)

    def peeking(rng, n):                                              # a "scanner" that is the failure itself
        return pd.DataFrame({"scanner": np.where(worst, "C", rng.choice(["A", "B"], n))})
    assert null_rate(inputs, peeking, 5, SliceConfig(cluster_counts=()), seed=1) == (1.0, 0.0)
