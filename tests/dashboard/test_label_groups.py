"""The heat map of a large label set by group or zoomed to one group: known answers and mass conservation."""
from __future__ import annotations

import numpy as np
import pytest

from dashboard import label_groups
from dashboard.analytics import Roi
from dashboard.matrices import MatrixView as View


def roi(k: int, name: str, grp: str) -> Roi:
    return Roi(k, name, grp, "#000000", True)


ROIS = [roi(0, "background", "other"), roi(1, "heart", "cardiovascular"), roi(2, "aorta", "cardiovascular"),
        roi(3, "rib_left_1", "bone"), roi(4, "rib_left_2", "bone"), roi(5, "liver", "organ")]
MATRIX = np.array([[0.70, 0.05, 0.05, 0.10, 0.05, 0.05],
                   [0.10, 0.60, 0.20, 0.00, 0.00, 0.10],
                   [0.10, 0.30, 0.40, 0.10, 0.10, 0.00],
                   [0.20, 0.00, 0.00, 0.50, 0.30, 0.00],
                   [0.20, 0.00, 0.00, 0.40, 0.40, np.nan],
                   [0.10, 0.10, 0.00, 0.00, 0.00, 0.80]])
COUNTS = np.full(MATRIX.shape, 40)
COUNTS[4, 5] = 0
VIEW = View(ROIS, ROIS, MATRIX, COUNTS, row_tree="tree", column_tree="tree")    # (trees: any placeholder)


def test_groups_sum_sources_and_average_targets():
    grouped = label_groups.zoom_view(VIEW, label_groups.GROUPS)
    names = ["cardiovascular (2)", "organ (1)", "bone (2)", "other (1)"]       # the palette's order
    assert [r.name for r in grouped.targets] == [r.name for r in grouped.sources] == names
    cardio, organ, bone, other = 0, 1, 2, 3
    # cardiovascular targets (rows 1, 2): sources heart+aorta summed, then the two rows averaged
    assert grouped.matrix[cardio, cardio] == pytest.approx(((0.6 + 0.2) + (0.3 + 0.4)) / 2)
    assert grouped.matrix[bone, bone] == pytest.approx(((0.5 + 0.3) + (0.4 + 0.4)) / 2)
    assert grouped.matrix[bone, organ] == pytest.approx(0.0), "a NaN cell does not make the mean NaN"
    assert grouped.matrix[other, other] == pytest.approx(0.7)
    assert grouped.counts[bone, organ] == 0 and grouped.counts[cardio, cardio] == 40, "smallest count"
    assert grouped.row_tree is None and grouped.column_tree is None


def test_grouping_keeps_each_groups_mean_row_mass():
    rng = np.random.default_rng(3)
    matrix = rng.dirichlet(np.ones(len(ROIS)), size=len(ROIS))
    view = View(ROIS, ROIS, matrix, COUNTS)
    for zoom in label_groups.zoom_options(ROIS)[1:]:
        zoomed = label_groups.zoom_view(view, zoom)
        for target, value in zip(zoomed.targets, zoomed.matrix.sum(axis=1)):
            members = [i for i, t in enumerate(ROIS) if t.grp == target.grp] if target.roi_id < 0 \
                else [ROIS.index(target)]
            assert value == pytest.approx(matrix[members].sum(axis=1).mean()), (zoom, target)


def test_zoom_to_one_group_keeps_its_classes_and_sums_the_others():
    zoomed = label_groups.zoom_view(VIEW, "group:bone")
    assert [r.name for r in zoomed.targets] == ["rib_left_1", "rib_left_2"]
    assert [r.name for r in zoomed.sources] == ["cardiovascular (2)", "organ (1)", "rib_left_1", "rib_left_2",
                                                "other (1)"]
    np.testing.assert_allclose(zoomed.matrix[0], [0.0, 0.0, 0.5, 0.3, 0.2])
    assert np.isnan(zoomed.matrix[1, 1]) and zoomed.counts[1, 1] == 0, "no value stays no value"


def test_all_is_the_view_itself_and_unknown_groups_are_refused():
    assert label_groups.zoom_view(VIEW, label_groups.ALL) is VIEW
    with pytest.raises(ValueError, match="no such class group"):
        label_groups.zoom_view(VIEW, "group:pathology")


def test_pickers_list_classes_by_group_keeping_their_order():
    assert [r.name for r in label_groups.picker_order(ROIS)] == ["heart", "aorta", "liver", "rib_left_1",
                                                                  "rib_left_2", "background"]
    assert label_groups.zoom_options(ROIS) == ["all", "groups", "group:cardiovascular", "group:organ",
                                               "group:bone", "group:other"]
