"""Anatomical groups of class names: the thorax set, and the names of larger sets (TotalSegmentator)."""
from __future__ import annotations

import pytest

from agg2exp_core.labels import THORAX_LABELS, group_of


def test_thorax_groups_are_unchanged():
    groups = {name: group_of(name) for name in THORAX_LABELS}
    assert groups["background"] == "other" and groups["heart"] == groups["aorta"] == "cardiovascular"
    assert groups["ribs"] == groups["vertebrae"] == groups["sternum"] == "bone"
    assert groups["autochthon_left"] == "muscle" and groups["lung_upper_lobe_left"] == groups["trachea"] == "organ"
    assert group_of("vertebraes") == "bone" and group_of("pleural_effusion") == "pathology"


@pytest.mark.parametrize("name, group", [
    ("vertebrae_L1", "bone"), ("vertebrae_C7", "bone"), ("rib_left_3", "bone"), ("sacrum", "bone"),
    ("femur_right", "bone"), ("hip_left", "bone"), ("skull", "bone"), ("clavicula_left", "bone"),
    ("iliac_artery_left", "cardiovascular"), ("superior_vena_cava", "cardiovascular"),
    ("portal_vein_and_splenic_vein", "cardiovascular"), ("brachiocephalic_trunk", "cardiovascular"),
    ("atrial_appendage_left", "cardiovascular"), ("gluteus_maximus_right", "muscle"), ("iliopsoas_left", "muscle"),
    ("liver", "organ"), ("kidney_cyst_left", "organ"), ("spinal_cord", "organ"), ("hippocampus", "organ"),
    ("tribute", "organ"), ("hipster", "organ"),
])
def test_names_of_larger_label_sets_find_their_group(name, group):
    assert group_of(name) == group
