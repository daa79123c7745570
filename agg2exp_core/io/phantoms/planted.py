"""Planted-failure phantom cohorts: subgroups, defined by metadata the model never sees, on which
a known class fails for a known reason (SEG4SEG's four failure types, MIDL 2026).

Each planted case is painted like a demo phantom (``cohort.make_phantom``) with one or more
departures, each tied to one manifest column:

- ``acquisition``: ``scanner == "C"`` reconstructs with a soft kernel (an extra Gaussian blur,
  ``SOFT_KERNEL_MM``); thin bone blurs into its surroundings: the ribs fail;
- ``anatomy``: ``history == "heart_failure"`` has cardiomegaly (heart scaled by ``CARDIOMEGALY``),
  outside the training phantoms' range: the heart fails;
- ``pathology``: ``finding == "effusion"`` has a right pleural effusion: the right lower lobe fails;
- ``annotation``: ``site == "s4"`` annotates the aorta ``AORTA_SHIFT_MM`` too far anterior; the
  image and the model's output are untouched, only the ground truth is wrong: a label problem,
  visible in the true Dice and not in a label-free (expected) Dice.

Distractor columns (``bmi``, the other values of each column, sex and age) carry no failure.
``plant`` chooses which failures are planted; with none the cohort is a null cohort (same
columns, same distributions, no effect). The reference dataset (for the outlier and expected-
Dice fits) never carries a planted value. The demo model (``data/demo_unet.pt``) was trained on
the demo cohort's seeds (``cohort_plan(seed=0)``); planted cohorts draw their own seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from agg2exp_core.errors import InputError
from agg2exp_core.io.images import save_nifti
from agg2exp_core.io.phantoms.anatomy import LABEL
from agg2exp_core.io.phantoms.cohort import Phantom, paint_thorax, posed_painter, write_manifest
from agg2exp_core.io.phantoms.pathology import _effusion, _scanner

SOFT_KERNEL_MM = 6.0        # sigma of the soft kernel's extra blur (ribs Dice 0.92 -> ~0.6 measured)
CARDIOMEGALY = 1.35         # heart semi-axes x 1.35 (heart Dice 0.94 -> ~0.8 measured)
AORTA_SHIFT_MM = 6.0        # the biased site's aorta annotation, anterior (aorta Dice 0.85 -> ~0.66)
RIGHT = 1                   # side of the planted effusion (``pathology._effusion``)


@dataclass(frozen=True)
class Planting:
    """One failure type: the subgroup ``column == value`` and the class it makes fail."""
    failure: str
    column: str
    value: str
    class_name: str
    label_problem: bool      # the ground truth is wrong, not the model


PLANTINGS: dict[str, Planting] = {p.failure: p for p in (
    Planting("acquisition", "scanner", "C", "ribs", False),
    Planting("anatomy", "history", "heart_failure", "heart", False),
    Planting("pathology", "finding", "effusion", "lung_lower_lobe_right", False),
    Planting("annotation", "site", "s4", "aorta", True),
)}
# Categorical columns: values and their shares among the planted dataset's cases (the planted
# value last); the reference dataset draws only from the other values.
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "scanner": (("A", "B", "C"), (0.4, 0.4, 0.2)),
    "history": (("none", "copd", "diabetes", "heart_failure"), (0.5, 0.15, 0.15, 0.2)),
    "finding": (("none", "nodule", "effusion"), (0.6, 0.2, 0.2)),
    "site": (("s1", "s2", "s3", "s4"), (0.3, 0.3, 0.2, 0.2)),
}
MANIFEST_COLUMNS = ["case_id", "image", "label", "sex", "age", "dataset", "split", *COLUMNS, "bmi"]
PLANTED_DATASET, REFERENCE_DATASET = "planted", "reference"


def planted_members(rows: list[dict], failure: str) -> set[str]:
    """Case ids of a failure's subgroup (by its metadata column), whether or not it was planted."""
    p = PLANTINGS[failure]
    return {r["case_id"] for r in rows if r[p.column] == p.value}


def _column(rng, n: int, values, shares, reference: bool) -> list[str]:
    """Exactly round(share * n) cases per value (the rest to the first), in random order."""
    if reference:                       # the reference never carries a planted value
        values, shares = values[:-1], np.asarray(shares[:-1]) / np.sum(shares[:-1])
    counts = np.floor(np.asarray(shares) * n + 0.5).astype(int)
    counts[0] += n - counts.sum()
    return [str(v) for v in rng.permutation(np.repeat(values, counts))]


def planted_plan(n_reference: int, n_cases: int, seed: int) -> list[dict]:
    """Case specifications: sex, age, seed and metadata of the reference and planted datasets."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x51CE]))
    cases = []
    for dataset, prefix, n in ((REFERENCE_DATASET, "ref", n_reference), (PLANTED_DATASET, "case", n_cases)):
        meta = {c: _column(rng, n, v, s, dataset == REFERENCE_DATASET) for c, (v, s) in COLUMNS.items()}
        sexes = rng.permutation(np.resize(["F", "M"], n))
        ages = np.rint(20 + 70 * (rng.permutation(n) + rng.random(n)) / max(n, 1)).astype(int)
        bmi = np.round(np.clip(rng.normal(26.0, 4.0, n), 16, 45), 1)
        seeds = rng.integers(0, 2 ** 31 - 1, n)
        for i in range(n):
            cases.append(dict(case_id=f"{prefix}-{i:03d}", sex=str(sexes[i]), age=int(ages[i]), dataset=dataset,
                              split="test", seed=int(seeds[i]), bmi=float(bmi[i]),
                              **{c: meta[c][i] for c in COLUMNS}))
    return cases


def draw_metadata(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The planted cohort's metadata columns drawn at random, independent of every case (the null)."""
    drawn = {c: rng.choice(np.asarray(v, dtype=object), n, p=s) for c, (v, s) in COLUMNS.items()}
    drawn["bmi"] = np.round(np.clip(rng.normal(26.0, 4.0, n), 16, 45), 1)
    return drawn


def failures_of(case: dict, plant) -> tuple[str, ...]:
    """The planted failures that apply to a case (its metadata in a planted subgroup)."""
    return tuple(f for f in plant if case[PLANTINGS[f].column] == PLANTINGS[f].value)


def planted_phantom(seed: int, sex: str, age: float, failures=(), shape=(64, 48, 48),
                    spacing=(6.0, 6.0, 6.0)) -> Phantom:
    """A phantom with the given planted failures; deterministic in its arguments."""
    unknown = set(failures) - set(PLANTINGS)
    if unknown:
        raise InputError("failures", f"unknown {sorted(unknown)}; known: {sorted(PLANTINGS)}")
    p, rng, frame, spacing = posed_painter(seed, sex, age, shape, spacing)   # the demo's pose and painting
    if "anatomy" in failures:
        p.heart_parts = [(c, tuple(np.multiply(r, CARDIOMEGALY)), rot) for c, r, rot in p.heart_parts]
    paint_thorax(p, rng)
    rois = {}
    if "pathology" in failures:
        rois["pleural_effusion"] = _effusion(p, rng, rng.uniform(0.22, 0.35), side=RIGHT)
    hu = _scanner(p.hu, rng, spacing, "standard")
    if "acquisition" in failures:
        hu = ndimage.gaussian_filter(hu, SOFT_KERNEL_MM / np.asarray(spacing)).astype(np.float32)
    labels = _biased_annotation(p.lab, spacing) if "annotation" in failures else p.lab
    return Phantom(hu=hu, labels=labels, rois=rois, affine=frame.affine, sex=sex, age=float(age),
                   kernel="standard", seed=int(seed), spacing=spacing)


def _biased_annotation(labels: np.ndarray, spacing) -> np.ndarray:
    """The aorta's annotation moved anterior (+Y) by AORTA_SHIFT_MM; the voxels it leaves become
    background, the ones it enters only where they were background."""
    steps = max(1, int(round(AORTA_SHIFT_MM / spacing[1])))
    aorta = labels == LABEL["aorta"]
    moved = np.zeros_like(aorta)
    moved[:, steps:] = aorta[:, :-steps]
    out = labels.copy()
    out[aorta] = 0
    out[moved & (out == 0)] = LABEL["aorta"]
    return out


def generate_planted_cohort(out_dir, plant=tuple(PLANTINGS), n_reference: int = 24, n_cases: int = 96,
                            shape=(64, 48, 48), spacing=(6.0, 6.0, 6.0), seed: int = 1) -> Path:
    """Write a planted cohort (NIfTI images and labels) and its manifest; return the manifest path.
    ``plant``: the failures planted (empty: a null cohort with the same metadata)."""
    plant = tuple(plant)
    unknown = set(plant) - set(PLANTINGS)
    if unknown:
        raise InputError("plant", f"unknown {sorted(unknown)}; known: {sorted(PLANTINGS)}")
    if n_reference < 1 or n_cases < 1:
        raise InputError("cohort size", "need at least one reference and one planted case")
    out = Path(out_dir)
    rows = []
    for case in planted_plan(n_reference, n_cases, seed):
        ph = planted_phantom(case["seed"], case["sex"], case["age"], failures_of(case, plant), shape, spacing)
        cid = case["case_id"]
        row = {k: case[k] for k in MANIFEST_COLUMNS if k in case}
        row.update(image=f"images/{cid}.nii.gz", label=f"labels/{cid}.nii.gz")
        save_nifti(np.clip(np.rint(ph.hu), -1024, 3071).astype(np.int16), ph.affine, out / row["image"])
        save_nifti(ph.labels.astype(np.uint8), ph.affine, out / row["label"])
        rows.append(row)
    return write_manifest(out, rows, MANIFEST_COLUMNS)
