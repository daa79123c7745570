"""The knowledge graph as a core function: top-k edges with thresholds."""
import numpy as np
import pytest

from agg2exp_core.analysis.graph import GraphConfig, self_mass, top_k_edges

MATRIX = np.array([[0.6, 0.25, 0.1, 0.05],     # target 1: sources 1 (self), 2, 3, 4
                   [0.3, 0.3, 0.4, np.nan]])   # target 2 (a tie between sources 1 and 2)
TARGETS, SOURCES = [1, 2], [1, 2, 3, 4]


def test_top_k_without_self_and_ties_by_source_id():
    edges = top_k_edges(MATRIX, TARGETS, SOURCES, GraphConfig(k=2))
    assert edges.values.tolist() == [[2, 1, 0.25, 1], [3, 1, 0.1, 2], [3, 2, 0.4, 1], [1, 2, 0.3, 2]]


def test_thresholds_min_mass_cumulative_and_exclusions():
    assert top_k_edges(MATRIX, TARGETS, SOURCES, GraphConfig(k=5, min_mass=0.2)).source_id.tolist() == [2, 3, 1]
    # target 1 outside itself: 0.25 + 0.1 + 0.05; half of it is covered by the first edge
    edges = top_k_edges(MATRIX, TARGETS, SOURCES, GraphConfig(k=5, cumulative=0.5))
    assert edges[edges.target_id == 1].source_id.tolist() == [2]
    edges = top_k_edges(MATRIX, TARGETS, SOURCES, GraphConfig(k=5, exclude=(1,)))
    assert set(edges.target_id) == {2} and 1 not in set(edges.source_id)
    assert len(top_k_edges(MATRIX, TARGETS, SOURCES, GraphConfig(k=1, include_self=True))) == 2


def test_bad_settings_and_shapes_are_refused():
    with pytest.raises(ValueError):
        GraphConfig(k=-1)
    with pytest.raises(ValueError):
        GraphConfig(cumulative=1.5)
    with pytest.raises(ValueError, match="does not match"):
        top_k_edges(MATRIX, [1], SOURCES)
    assert self_mass(MATRIX, TARGETS, SOURCES) == {1: 0.6, 2: 0.3}
