"""Label sets for tests and benchmarks beyond the 17 thorax classes.

``TOTALSEG_LIKE``: background and 116 structures named as TotalSegmentator (v2) names them,
117 classes in all, spread over every anatomical group of ``agg2exp_core.labels``.
"""
from __future__ import annotations

_SIDES = ("left", "right")

_STRUCTURES = (
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
    "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
    "kidney_cyst_right", "sacrum", "vertebrae_S1",
    *(f"vertebrae_L{k}" for k in range(5, 0, -1)), *(f"vertebrae_T{k}" for k in range(12, 0, -1)),
    *(f"vertebrae_C{k}" for k in range(7, 0, -1)),
    "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right",
    "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava",
    "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right",
    "iliac_vena_left", "iliac_vena_right",
    *(f"{bone}_{side}" for bone in ("humerus", "scapula", "clavicula", "femur", "hip") for side in _SIDES),
    "spinal_cord", *(f"gluteus_{part}_{side}" for part in ("maximus", "medius", "minimus") for side in _SIDES),
    "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain", "skull",
    *(f"rib_{side}_{k}" for side in _SIDES for k in range(1, 13)), "sternum", "costal_cartilages",
)
assert len(_STRUCTURES) == len(set(_STRUCTURES)) == 117      # TotalSegmentator v2's 117 structures

TOTALSEG_LIKE: tuple[str, ...] = ("background", *_STRUCTURES[:116])
