"""RoI-importance matrices (Eq. 7): known answers, partitions sum to one, NaN rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agg2exp_core.aggregate import context_mass, global_matrix, local_matrices, roi_importance


def test_known_answer_abs_pos_neg():
    attr = torch.tensor([[[1.0, -3.0, 2.0, -4.0]]])          # one class, four voxels [1, 1, 4]
    rois = torch.tensor([[0, 0, 1, 1]])                       # label map [1, 4]
    np.testing.assert_allclose(roi_importance(attr, rois, "abs"), [[4 / 10, 6 / 10]])
    np.testing.assert_allclose(roi_importance(attr, rois, "pos"), [[1 / 3, 2 / 3]])
    np.testing.assert_allclose(roi_importance(attr, rois, "neg"), [[3 / 7, 4 / 7]])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_classes=st.integers(1, 5), n_rois=st.integers(1, 6))
def test_rows_sum_to_one_on_a_partition(seed, n_classes, n_rois):
    rng = np.random.default_rng(seed)
    attr = rng.normal(size=(n_classes, 5, 4, 3))
    labels = rng.integers(0, n_rois, size=(5, 4, 3))
    for kind in ("abs", "pos", "neg"):
        m = roi_importance(attr, labels, kind, n_rois=n_rois)
        assert m.shape == (n_classes, n_rois)
        assert np.all(m >= 0)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)


def test_label_map_equals_boolean_stack():
    rng = np.random.default_rng(1)
    attr = rng.normal(size=(3, 6, 6, 6))
    labels = rng.integers(0, 4, size=(6, 6, 6))
    stack = np.stack([labels == r for r in range(4)])
    np.testing.assert_allclose(roi_importance(attr, labels, n_rois=4), roi_importance(attr, stack), atol=1e-12)


def test_overlapping_rois_may_exceed_one_and_zero_attribution_gives_nan():
    attr = np.ones((2, 2, 2, 2))
    attr[1] = 0.0
    everything = np.ones((2, 2, 2), bool)
    m = roi_importance(attr, np.stack([everything, everything]))
    np.testing.assert_allclose(m[0], [1.0, 1.0])
    assert np.isnan(m[1]).all()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        roi_importance(np.ones((1, 2, 2, 2)), np.zeros((2, 2, 3), int))


def test_local_matrices_append_extra_rois_and_context_mass():
    attr = np.zeros((2, 4, 1, 1))
    attr[0, :, 0, 0] = [3, 1, 0, 0]           # class 0: 3/4 inside its own region
    attr[1, :, 0, 0] = [0, 0, 1, 1]           # class 1: nothing inside its own region
    pred = np.array([0, 1, 0, 1]).reshape(4, 1, 1)
    effusion = np.array([0, 0, 1, 1], bool).reshape(4, 1, 1)
    m = local_matrices(attr, pred, 2, {"effusion": effusion})["abs"]
    np.testing.assert_allclose(m, [[0.75, 0.25, 0.0], [0.5, 0.5, 1.0]])
    np.testing.assert_allclose(context_mass(m), [0.25, 0.5])


def test_global_matrix_is_the_mean_ignoring_nan_rows():
    a = np.array([[[0.2, 0.8]], [[0.4, 0.6]], [[np.nan, np.nan]]])
    np.testing.assert_allclose(global_matrix(a), [[0.3, 0.7]])
    with pytest.raises(ValueError):
        global_matrix(np.zeros((0, 2, 2)))


def test_context_mass_of_a_class_subset_reads_each_row_at_its_own_class():
    """Explaining classes [2, 0] of three gives rows 2 and 0: the self mass of row i is column classes[i]."""
    attr = np.zeros((2, 6, 1, 1))
    attr[0, :, 0, 0] = [0, 0, 1, 1, 2, 6]     # class 2: 8/10 inside its own region (voxels 4, 5)
    attr[1, :, 0, 0] = [1, 3, 0, 0, 0, 4]     # class 0: 4/8 inside its own region (voxels 0, 1)
    pred = np.array([0, 0, 1, 1, 2, 2]).reshape(6, 1, 1)
    m = local_matrices(attr, pred, 3)["abs"]
    np.testing.assert_allclose(m, [[0.0, 0.2, 0.8], [0.5, 0.0, 0.5]])
    np.testing.assert_allclose(context_mass(m, classes=[2, 0]), [0.2, 0.5])
    np.testing.assert_allclose(context_mass(np.stack([m, m]), classes=[2, 0]), [[0.2, 0.5]] * 2)
    full = local_matrices(np.concatenate([attr[1:], np.ones((1, 6, 1, 1)), attr[:1]]), pred, 3)["abs"]
    np.testing.assert_allclose(context_mass(full), [0.5, 2 / 3, 0.2])  # all classes: the diagonal
    with pytest.raises(ValueError):
        context_mass(m, classes=[2])
