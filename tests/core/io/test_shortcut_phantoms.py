"""Phantoms with a planted shortcut (issue #25 b): where the marker is, when it is painted, how weakly
the effusion shows, and which cases of the known-answer cohort carry what."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io.manifest import check_roi_names, read_manifest
from agg2exp_core.io.phantoms import make_phantom
from agg2exp_core.io.phantoms.shortcut import (EFFUSION_CLASS, MARKER_HU, MARKER_ROI, MARKER_SIZE, SHORTCUT_LABELS,
                                               generate_shortcut_cohort, make_shortcut_phantom, marker_box,
                                               shortcut_plan)
from agg2exp_core.labels import THORAX_LABELS

LUNGS = [SHORTCUT_LABELS.index("lung_left"), SHORTCUT_LABELS.index("lung_right")]


@pytest.fixture(scope="module")
def pairs():
    """Same anatomy, marked and unmarked, each with an effusion."""
    return [(make_shortcut_phantom(s, "FM"[s % 2], 50, True, True), make_shortcut_phantom(s, "FM"[s % 2], 50, True, False))
            for s in range(4)]


def test_marker_is_painted_only_when_marked_and_lies_in_air(pairs):
    for marked, unmarked in pairs:
        assert marked.marker.sum() == np.prod(MARKER_SIZE) and np.array_equal(marked.marker, unmarked.marker)
        assert marked.hu[marked.marker].min() > 0.8 * MARKER_HU          # bright after the scanner's blur
        assert unmarked.hu[unmarked.marker].max() < -900                 # air behind the patient
        assert (unmarked.labels[unmarked.marker] == 0).all()
        outside = ~marked.marker
        # The marker changes nothing else than its box and the blur around it.
        ring = np.zeros_like(outside)
        box = marker_box(marked.hu.shape)
        ring[tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)] = True
        assert np.allclose(marked.hu[outside & ~ring], unmarked.hu[outside & ~ring])
        assert np.array_equal(marked.labels, unmarked.labels)


def test_effusion_is_a_class_and_only_weakly_visible(pairs):
    for marked, _ in pairs:
        fluid = marked.labels == EFFUSION_CLASS
        assert fluid.sum() > 100
        lung = np.isin(marked.labels, LUNGS)
        contrast = marked.hu[fluid].mean() - marked.hu[lung].mean()
        spread = marked.hu[lung].std()
        assert 20 < contrast < 0.8 * spread, (contrast, spread)         # weaker than the lung's own texture
    # the demo's effusion (water density) is about a thousand HU above the lung: plainly visible
    demo = make_phantom(0, "F", 50, pathology=("pleural_effusion",))
    fluid = demo.rois["pleural_effusion"]
    lung = np.isin(demo.labels, [i for i, n in enumerate(THORAX_LABELS) if n.startswith("lung_")])
    assert demo.hu[fluid].mean() - demo.hu[lung].mean() > 500


def test_no_effusion_no_effusion_label_and_deterministic():
    a = make_shortcut_phantom(7, "M", 40, False, False)
    b = make_shortcut_phantom(7, "M", 40, False, False)
    assert not (a.labels == EFFUSION_CLASS).any()
    assert np.array_equal(a.hu, b.hu)
    with pytest.raises(InputError, match="sex"):
        make_shortcut_phantom(7, "X", 40, False, False)


def test_plan_marks_every_training_effusion_of_the_shortcut_cohort_only():
    plan = shortcut_plan(6, 3)
    by = {}
    for case in plan:
        by.setdefault(case["dataset"], []).append(case)
    assert [len(by[d]) for d in ("shortcut_train", "control_train", "marked", "unmarked")] == [6, 6, 3, 3]
    assert all(c["marked"] == c["effusion"] for c in by["shortcut_train"])
    assert sum(c["effusion"] for c in by["shortcut_train"]) == 3
    assert not any(c["marked"] for c in by["control_train"] + by["unmarked"])
    assert all(c["marked"] for c in by["marked"])
    assert all(c["effusion"] for c in by["marked"] + by["unmarked"])
    # the control sees the same anatomy and effusions as the shortcut network, without the marker
    assert [(c["seed"], c["effusion"]) for c in by["shortcut_train"]] == [(c["seed"], c["effusion"])
                                                                          for c in by["control_train"]]
    assert not {c["seed"] for c in by["marked"]} & {c["seed"] for c in by["unmarked"]}


def test_cohort_manifest_has_the_marker_roi(tmp_path):
    manifest = generate_shortcut_cohort(tmp_path, n_train=2, n_test=2, shape=(24, 24, 16), spacing=16.0)
    frame = read_manifest(manifest)
    assert len(frame) == 8 and f"roi:{MARKER_ROI}" in frame.columns
    assert check_roi_names(manifest, frame, SHORTCUT_LABELS) == [MARKER_ROI]
    with pytest.raises(InputError, match="cohort size"):
        generate_shortcut_cohort(tmp_path / "x", n_train=1, n_test=2)
