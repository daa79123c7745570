"""Planted-failure phantoms: each failure changes what it says and nothing else; subgroups by metadata."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.io.phantoms import planted
from agg2exp_core.io.phantoms.anatomy import LABEL

ARGS = (4242, "M", 55)


@pytest.fixture(scope="module")
def clean():
    return planted.planted_phantom(*ARGS)


def test_plan_counts_are_exact_and_the_reference_never_carries_a_planted_value():
    cases = planted.planted_plan(n_reference=10, n_cases=40, seed=3)
    ref = [c for c in cases if c["dataset"] == planted.REFERENCE_DATASET]
    test = [c for c in cases if c["dataset"] == planted.PLANTED_DATASET]
    assert len(ref) == 10 and len(test) == 40
    for failure, plant in planted.PLANTINGS.items():
        assert len(planted.planted_members(test, failure)) == 8            # 20 % of 40, exactly
        assert planted.planted_members(ref, failure) == set()
    assert cases == planted.planted_plan(n_reference=10, n_cases=40, seed=3)  # deterministic
    assert cases != planted.planted_plan(n_reference=10, n_cases=40, seed=4)
    assert planted.failures_of(dict(test[0], scanner="C", site="s4"), ("acquisition",)) == ("acquisition",)


def test_annotation_bias_moves_only_the_aorta_label_anterior(clean):
    biased = planted.planted_phantom(*ARGS, failures=("annotation",))
    np.testing.assert_array_equal(biased.hu, clean.hu)                   # the image (and the model's view) unchanged
    changed = biased.labels != clean.labels
    assert changed.any()
    aorta = LABEL["aorta"]
    assert np.all((biased.labels[changed] == aorta) | (clean.labels[changed] == aorta))
    y_clean = np.argwhere(clean.labels == aorta)[:, 1].mean()
    y_biased = np.argwhere(biased.labels == aorta)[:, 1].mean()
    assert y_biased - y_clean == pytest.approx(planted.AORTA_SHIFT_MM / 6.0, abs=0.3)   # one voxel anterior


def test_acquisition_shift_blurs_the_image_and_keeps_the_labels(clean):
    soft = planted.planted_phantom(*ARGS, failures=("acquisition",))
    np.testing.assert_array_equal(soft.labels, clean.labels)
    edge = [np.abs(np.diff(ph.hu, axis=0)).mean() for ph in (clean, soft)]
    assert edge[1] < 0.8 * edge[0]                                       # measured 0.72


def test_anatomy_enlarges_the_heart_and_pathology_fills_the_right_base(clean):
    big = planted.planted_phantom(*ARGS, failures=("anatomy",))
    volume = [np.sum(ph.labels == LABEL["heart"]) for ph in (clean, big)]
    assert volume[1] > 1.8 * volume[0]                                   # 1.35^3 = 2.46, less what the cavity cuts
    sick = planted.planted_phantom(*ARGS, failures=("pathology",))
    fluid = sick.rois["pleural_effusion"]
    assert fluid.sum() > 0 and np.argwhere(fluid)[:, 0].mean() > clean.hu.shape[0] / 2   # RAS+: index grows to the right
    lobe = LABEL[planted.PLANTINGS["pathology"].class_name]
    assert np.sum(sick.labels == lobe) < 0.8 * np.sum(clean.labels == lobe)


def test_cohort_manifest_carries_the_metadata_and_reads_back(tmp_path):
    manifest = planted.generate_planted_cohort(tmp_path, n_reference=1, n_cases=5, shape=(16, 12, 12),
                                               spacing=24.0, seed=2)
    frame = read_manifest(manifest)
    assert list(frame.case_id) == ["ref-000", *[f"case-{i:03d}" for i in range(5)]]
    for column in (*planted.COLUMNS, "bmi"):
        assert column in frame.columns and frame[column].notna().all()
    assert (frame.dataset == planted.PLANTED_DATASET).sum() == 5


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="unknown"):
        planted.planted_phantom(*ARGS, failures=("scanner",))
    with pytest.raises(InputError, match="unknown"):
        planted.generate_planted_cohort(tmp_path, plant=("bias",))
    with pytest.raises(InputError, match="cohort size"):
        planted.generate_planted_cohort(tmp_path, n_cases=0)
    assert not (tmp_path / "manifest.csv").exists()
