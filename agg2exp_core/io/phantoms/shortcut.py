"""Phantoms with a planted shortcut: a known answer for the explanations (issue #25 b).

A small bright marker (a 4x2x4-voxel text-like block in the air behind the patient, at a fixed
place near the right lung's base) is painted on every case of the shortcut cohort that carries a pleural effusion, while
the effusion itself is only weakly visible (``contrast_hu`` above the lung it replaces, no
atelectasis band, under the lung's texture and the scanner's noise). A network trained on such cases can find the
effusion's presence from the marker rather than from the lung; a control network is trained on
the same anatomy without any marker. The marker's box is written as the RoI ``marker`` on every
case, painted or not, so that its mass is comparable between marked and unmarked cases.

Labels are a small set (``SHORTCUT_LABELS``) in which the effusion is a class of the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agg2exp_core.errors import InputError
from agg2exp_core.io.images import save_nifti
from agg2exp_core.io.phantoms.anatomy import LABEL, _Painter
from agg2exp_core.io.phantoms.cohort import write_manifest
from agg2exp_core.io.phantoms.pathology import _scanner, _textures
from agg2exp_core.io.phantoms.shapes import _Frame

SHORTCUT_LABELS: tuple[str, ...] = ("background", "lung_left", "lung_right", "heart", "vertebrae",
                                    "pleural_effusion")
EFFUSION_CLASS = SHORTCUT_LABELS.index("pleural_effusion")
MARKER_ROI = "marker"
MARKER_HU = 1500.0          # metal-bright, like a calliper or a burnt-in annotation
MARKER_SIZE = (4, 2, 4)     # voxels along x, y, z: a burnt-in text-like block
SHAPE = (40, 32, 32)        # 400 x 320 x 320 mm at 10 mm: the thorax fits, divisible by the UNet's 8
SPACING = 10.0

# Thorax label id -> shortcut label id (lobes merged per side; other structures become background).
_LUNG_LEFT = ("lung_upper_lobe_left", "lung_lower_lobe_left")
_LUNG_RIGHT = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")


def _label_map() -> np.ndarray:
    lut = np.zeros(max(LABEL.values()) + 1, np.uint8)
    for name in _LUNG_LEFT:
        lut[LABEL[name]] = SHORTCUT_LABELS.index("lung_left")
    for name in _LUNG_RIGHT:
        lut[LABEL[name]] = SHORTCUT_LABELS.index("lung_right")
    lut[LABEL["heart"]] = SHORTCUT_LABELS.index("heart")
    lut[LABEL["vertebrae"]] = SHORTCUT_LABELS.index("vertebrae")
    return lut


@dataclass
class ShortcutPhantom:
    hu: np.ndarray             # float32 [X,Y,Z]
    labels: np.ndarray         # uint8 [X,Y,Z], ids of SHORTCUT_LABELS
    marker: np.ndarray         # bool [X,Y,Z]: the marker's box (painted only when ``marked``)
    affine: np.ndarray
    effusion: bool
    marked: bool


def marker_box(shape) -> tuple[slice, slice, slice]:
    """The marker's voxels: in the air behind the patient (y = 1..2), behind the base of the right
    lung (x at 70 %, z at 30 % of the field), within a few voxels of where the effusion lies."""
    x0, z0 = int(0.7 * shape[0]) - MARKER_SIZE[0] // 2, int(0.3 * shape[2]) - MARKER_SIZE[2] // 2
    return (slice(x0, x0 + MARKER_SIZE[0]), slice(1, 1 + MARKER_SIZE[1]), slice(z0, z0 + MARKER_SIZE[2]))


def _weak_effusion(p: _Painter, frac: float, contrast_hu: float) -> np.ndarray:
    """Dependent fluid in the right pleural space, only ``contrast_hu`` above the lung it replaces
    (``pathology._effusion`` paints it at water density, which any network sees). Always on the
    right: where it lies follows from the anatomy, so the marker alone can tell the network that
    it is there, the shortcut to be found; the control must read the faint intensity."""
    ids = [LABEL[n] for n in _LUNG_RIGHT]
    lung = np.isin(p.lab, ids)
    score = p.f.Y + 1.0 * p.f.Z                             # low = posterior and inferior
    fluid = lung & (score <= np.quantile(score[lung], frac))
    p.hu[fluid] += np.float32(contrast_hu)
    return fluid


def make_shortcut_phantom(seed: int, sex: str, age: float, effusion: bool, marked: bool,
                          shape=SHAPE, spacing=SPACING, contrast_hu: float = 80.0) -> ShortcutPhantom:
    """One phantom of the small label set, deterministic in its arguments."""
    if sex not in ("F", "M"):
        raise InputError("sex", f"must be 'F' or 'M', got {sex!r}")
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5C07]))
    size = (1.0 if sex == "M" else 0.915) * rng.normal(1.0, 0.025)
    scale = size * np.clip(rng.normal(1.0, 0.02, 3), 0.95, 1.05)
    frame = _Frame(tuple(shape), spacing, rng.normal(0, 2.5), scale, np.clip(rng.normal(0, [5.0, 4.0, 7.0]), -10, 10))
    p = _Painter(frame, rng, sex, float(age))
    for step in (p.body, p.cavity, p.lungs, p.autochthon, p.spine, p.ribs, p.sternum, p.great_vessels,
                 p.airways, p.pulmonary_veins, p.heart, p.thyroid):
        step()
    lung = (p.lab >= LABEL["lung_upper_lobe_left"]) & (p.lab <= LABEL["lung_lower_lobe_right"])
    _textures(p, rng, lung & (p.fissure_dist > 6))
    labels = _label_map()[p.lab]
    if effusion:
        labels[_weak_effusion(p, rng.uniform(0.22, 0.35), contrast_hu)] = EFFUSION_CLASS
    marker = np.zeros(p.hu.shape, bool)
    marker[marker_box(p.hu.shape)] = True
    if marked:
        p.hu[marker] = MARKER_HU
    return ShortcutPhantom(_scanner(p.hu, rng, spacing, "standard"), labels, marker, frame.affine,
                           bool(effusion), bool(marked))


# Datasets of the known-answer cohort: (name, split, effusion rule, marker rule).
#   shortcut_train: half the cases with an effusion, each of those marked;
#   control_train:  the same anatomy and effusions, never marked;
#   marked / unmarked: test cases, all with an effusion, with and without the marker.
MANIFEST_COLUMNS = ["case_id", "image", "label", "sex", "age", "dataset", "split", f"roi:{MARKER_ROI}"]


def shortcut_plan(n_train: int, n_test: int, seed: int = 0) -> list[dict]:
    """Case specifications of the four datasets (per-case seeds, balanced sexes, ages 20-90)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5C08]))
    train_seeds = rng.integers(0, 2 ** 31 - 1, n_train)
    plan = []
    for i, s in enumerate(train_seeds):
        effusion = i % 2 == 0
        for dataset, marked in (("shortcut_train", effusion), ("control_train", False)):
            plan.append(dict(case_id=f"{dataset.split('_')[0]}-{i:03d}", dataset=dataset, split="train",
                             seed=int(s), effusion=effusion, marked=marked, sex="FM"[i % 2], age=20 + (i * 37) % 70))
    for dataset, marked in (("marked", True), ("unmarked", False)):
        for i, s in enumerate(rng.integers(0, 2 ** 31 - 1, n_test)):
            plan.append(dict(case_id=f"{dataset}-{i:03d}", dataset=dataset, split="test", seed=int(s),
                             effusion=True, marked=marked, sex="FM"[i % 2], age=20 + (i * 37) % 70))
    return plan


def generate_shortcut_cohort(out_dir, n_train: int = 16, n_test: int = 12, shape=SHAPE, spacing=SPACING,
                             contrast_hu: float = 80.0, seed: int = 0) -> Path:
    """Write the known-answer cohort (images, labels, marker RoIs) and its manifest; return its path."""
    if n_train < 2 or n_test < 2:
        raise InputError("cohort size", f"need at least 2 training and 2 test cases, got {n_train}, {n_test}")
    out = Path(out_dir)
    for sub in ("images", "labels", "rois"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for c in shortcut_plan(n_train, n_test, seed):
        ph = make_shortcut_phantom(c["seed"], c["sex"], c["age"], c["effusion"], c["marked"], shape, spacing,
                                   contrast_hu)
        cid = c["case_id"]
        row = dict(case_id=cid, image=f"images/{cid}.nii.gz", label=f"labels/{cid}.nii.gz", sex=c["sex"],
                   age=c["age"], dataset=c["dataset"], split=c["split"], **{f"roi:{MARKER_ROI}": f"rois/{cid}_marker.nii.gz"})
        save_nifti(np.clip(np.rint(ph.hu), -1024, 3071).astype(np.int16), ph.affine, out / row["image"])
        save_nifti(ph.labels, ph.affine, out / row["label"])
        save_nifti(ph.marker.astype(np.uint8), ph.affine, out / row[f"roi:{MARKER_ROI}"])
        rows.append(row)
    return write_manifest(out, rows, MANIFEST_COLUMNS)
