"""Label sets: names, anatomical groups and display colours of classes and extra RoIs.

The demo and the paper's published model share the 17 thorax labels below (channel
order of the paper's model). A real model brings its own names in its checkpoint;
nothing downstream may assume exactly these.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

THORAX_LABELS: tuple[str, ...] = (
    "background", "aorta",
    "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
    "lung_middle_lobe_right", "lung_lower_lobe_right", "trachea", "heart",
    "pulmonary_vein", "thyroid_gland", "ribs", "vertebrae", "autochthon_left",
    "autochthon_right", "sternum", "costal_cartilages",
)
PATHOLOGY_ROIS: tuple[str, ...] = ("pleural_effusion", "consolidation")

GROUP_COLORS: dict[str, str] = {
    "cardiovascular": "#d62728",
    "organ": "#7f7f7f",
    "bone": "#1f77b4",
    "muscle": "#e6b800",
    "pathology": "#000000",
    "other": "#bdbdbd",
}

_GROUP_BY_NAME: dict[str, str] = {
    "background": "other",
    "aorta": "cardiovascular", "heart": "cardiovascular", "pulmonary_vein": "cardiovascular",
    "ribs": "bone", "vertebrae": "bone", "sternum": "bone", "costal_cartilages": "bone",
    "autochthon_left": "muscle", "autochthon_right": "muscle",
    "pleural_effusion": "pathology", "consolidation": "pathology",
}

# Name patterns of larger label sets (TotalSegmentator's 117 classes: vertebrae_L1, rib_left_3,
# iliac_artery_left, gluteus_maximus_right, ...), tried in order after the exact names above.
_GROUP_PATTERNS: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), g) for p, g in (
    (r"(artery|arteries|vein|vena|aorta|heart|atrial_appendage|brachiocephalic_trunk)", "cardiovascular"),
    (r"^(vertebra|rib_|ribs|sacrum|humerus|scapula|clavicula|femur|hip_|skull|sternum|costal_cartilage)",
     "bone"),
    (r"^(gluteus_|iliopsoas|autochthon)", "muscle"),
))

# Spellings seen in published material, mapped to our names.
NAME_ALIASES: dict[str, str] = {"vertebraes": "vertebrae"}


def group_of(name: str) -> str:
    """Anatomical group of a class or RoI name; unknown organs fall into 'organ'."""
    name = NAME_ALIASES.get(name, name)
    if name in _GROUP_BY_NAME:
        return _GROUP_BY_NAME[name]
    return next((group for pattern, group in _GROUP_PATTERNS if pattern.search(name)), "organ")


def color_of(name: str) -> str:
    return GROUP_COLORS[group_of(name)]


@dataclass(frozen=True)
class RoiSpec:
    name: str
    grp: str
    color: str
    is_class: bool


def roi_specs(class_names: tuple[str, ...] | list[str],
              extra_rois: tuple[str, ...] | list[str] = ()) -> list[RoiSpec]:
    """RoI descriptions: the model's classes first (in channel order), then extra masks."""
    specs = [RoiSpec(n, group_of(n), color_of(n), True) for n in class_names]
    specs += [RoiSpec(n, group_of(n), color_of(n), False) for n in extra_rois]
    return specs
