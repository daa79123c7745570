"""Synthetic thorax-CT phantoms: the demo cohort (no public CT can be downloaded here).

Each phantom is painted from implicit shapes (ellipsoids, elliptic cylinders, tubes
along polylines) whose geometry is given in millimetres in a canonical patient frame,
so a different grid samples the same anatomy at another resolution. A random pose
(shift, per-axis scale, rotation about z) maps that frame into the scanner frame.

Arrays are RAS+ ``[X, Y, Z]`` (index grows toward Right, Anterior, Superior), like the
rest of the core. Labels follow ``labels.THORAX_LABELS``; extra RoI masks follow
``labels.PATHOLOGY_ROIS``. Painting order is the label priority: later shapes win, and
thin fat halos around organs carve them out of the lungs only.

Non-contrast scan: blood and myocardium ~40 HU, so heart, aorta and pulmonary veins are
told apart by fat planes and position, as on a real non-contrast CT. Variation: sex
(males ~9 % larger), age (bone mineral down, lung density up, aorta wider), pose and
per-organ jitter, scanner kernel (``standard``: smooth noise ~18 HU; ``sharp``: less
blur, edge enhancement, white noise ~42 HU). ``generate_cohort`` writes the demo cohort;
``preview.save_preview`` draws the figure in ``docs/phantom.png``.

The manifest also carries metadata columns that say how each scan was made (no random draw:
the images, and the demo's Dice, do not depend on them): ``scanner`` ('A' for the standard
kernel of the reference hospital, 'B' for the external cohort's sharp one), ``kernel``, ``site``
(the reference cases alternate between two sites of one hospital, the external ones come from a
third) and ``slice_thickness_mm`` (the grid's z spacing).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agg2exp_core.errors import InputError
from agg2exp_core.io.images import save_nifti
from agg2exp_core.io.phantoms.anatomy import LABEL, _Painter
from agg2exp_core.io.phantoms.pathology import _consolidation, _effusion, _scanner, _textures
from agg2exp_core.io.phantoms.shapes import _Frame
from agg2exp_core.labels import PATHOLOGY_ROIS

KERNELS = ("standard", "sharp")


@dataclass
class Phantom:
    """One synthetic CT: HU volume, label map, pathology masks, RAS+ affine."""
    hu: np.ndarray                      # float32 [X,Y,Z] Hounsfield units
    labels: np.ndarray                  # uint8 [X,Y,Z], ids of THORAX_LABELS
    rois: dict[str, np.ndarray]         # pathology name -> bool [X,Y,Z]
    affine: np.ndarray                  # 4x4 RAS+, diagonal spacing, origin centred
    sex: str
    age: float
    kernel: str = "standard"
    seed: int = 0
    spacing: tuple[float, float, float] = (6.0, 6.0, 6.0)









def posed_painter(seed: int, sex: str, age: float, shape, spacing) -> tuple[_Painter, np.random.Generator, _Frame,
                                                                          tuple[float, float, float]]:
    """(painter, its generator, frame, spacing) of one patient: body size by sex, pose, field of view.

    The draws come first and in this order, so a phantom depends only on its arguments (the planted
    cohorts of ``planted.py`` pose their patients with it too)."""
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7407]))
    size = (1.0 if sex == "M" else 0.915) * rng.normal(1.0, 0.025)
    scale = size * np.clip(rng.normal(1.0, 0.02, 3), 0.95, 1.05)
    shift = np.clip(rng.normal(0, [5.0, 4.0, 7.0]), -10, 10)
    frame = _Frame(tuple(shape), spacing, rng.normal(0, 2.5), scale, shift)
    return _Painter(frame, rng, sex, float(age)), rng, frame, spacing


def paint_thorax(p: _Painter, rng: np.random.Generator) -> None:
    """Paint every structure in its order (later ones overwrite earlier), then the lungs' texture."""
    for step in (p.body, p.cavity, p.lungs, p.autochthon, p.spine, p.ribs, p.sternum, p.great_vessels,
                 p.airways, p.pulmonary_veins, p.heart, p.thyroid):
        step()
    lung = (p.lab >= LABEL["lung_upper_lobe_left"]) & (p.lab <= LABEL["lung_lower_lobe_right"])
    _textures(p, rng, lung & (p.fissure_dist > 6))


def write_manifest(out: Path, rows: list[dict], columns: list[str]) -> Path:
    """``out/manifest.csv`` of ``rows`` in ``columns``, replaced at once (readers never see half a manifest)."""
    manifest = out / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)
    return manifest


def make_phantom(seed: int, sex: str, age: float, shape=(64, 48, 48), spacing=(6.0, 6.0, 6.0),
                 pathology: tuple[str, ...] = (), kernel: str = "standard") -> Phantom:
    """One thorax phantom, deterministic in all its arguments."""
    if sex not in ("F", "M"):
        raise InputError("sex", f"must be 'F' or 'M', got {sex!r}")
    if kernel not in KERNELS:
        raise InputError("kernel", f"must be one of {KERNELS}, got {kernel!r}")
    unknown = set(pathology) - set(PATHOLOGY_ROIS)
    if unknown:
        raise InputError("pathology", f"unknown {sorted(unknown)}; known: {PATHOLOGY_ROIS}")
    p, rng, frame, spacing = posed_painter(seed, sex, age, shape, spacing)
    paint_thorax(p, rng)
    rois = {}
    if "pleural_effusion" in pathology:                     # first: fluid is no longer lung
        rois["pleural_effusion"] = _effusion(p, rng, rng.uniform(0.22, 0.35))  # moderate to large
    if "consolidation" in pathology:
        rois["consolidation"] = _consolidation(p, rng)
    hu = _scanner(p.hu, rng, spacing, kernel)
    return Phantom(hu=hu, labels=p.lab, rois=rois, affine=frame.affine, sex=sex, age=float(age),
                   kernel=kernel, seed=int(seed), spacing=spacing)


def _pathology_plan(n: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """About a third of the external cases (at least 5 of 16) carry pathology."""
    k = min(n, int(np.ceil(0.35 * n)))
    kinds = [("pleural_effusion",), ("consolidation",), ("pleural_effusion", "consolidation")]
    plan: list[tuple[str, ...]] = [()] * n
    for slot, idx in enumerate(sorted(rng.choice(n, k, replace=False))):
        plan[idx] = kinds[slot % 3]
    return plan


SCANNERS = {"standard": "A", "sharp": "B"}   # the demo's metadata: one scanner per kernel


def _site(dataset: str, i: int) -> str:
    return "south" if dataset == "external" else ("north", "east")[i % 2]


def cohort_plan(n_reference, n_test, n_external, seed):
    """Case specifications: balanced sexes, ages uniform in 20-90, per-case seeds."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0405]))
    cases = []
    for dataset, prefix, n in (("reference", "ref", n_reference), ("external", "ext", n_external)):
        sexes = rng.permutation(np.resize(["F", "M"], n))
        ages = np.rint(20 + 70 * (rng.permutation(n) + rng.random(n)) / max(n, 1)).astype(int)
        seeds = rng.integers(0, 2 ** 31 - 1, n)
        if dataset == "reference":
            test = set(rng.choice(n, n_test, replace=False).tolist()) if n else set()
            splits = ["test" if i in test else "train" for i in range(n)]
            paths, kernel = [()] * n, "standard"
        else:
            splits, paths, kernel = ["test"] * n, _pathology_plan(n, rng), "sharp"
        for i in range(n):
            cases.append(dict(case_id=f"{prefix}-{i:03d}", sex=str(sexes[i]), age=int(ages[i]),
                              dataset=dataset, split=splits[i], kernel=kernel,
                              scanner=SCANNERS[kernel], site=_site(dataset, i),
                              pathology=paths[i], seed=int(seeds[i])))
    return cases


METADATA_COLUMNS = ["scanner", "kernel", "site", "slice_thickness_mm"]
MANIFEST_COLUMNS = ["case_id", "image", "label", "sex", "age", "dataset", "split"] + METADATA_COLUMNS + \
    [f"roi:{r}" for r in PATHOLOGY_ROIS]


def generate_cohort(out_dir, n_reference: int = 20, n_test: int = 8, n_external: int = 16,
                    shape=(64, 48, 48), spacing=(6.0, 6.0, 6.0), seed: int = 0) -> Path:
    """Write the demo cohort (NIfTI images, labels, RoI masks) and its manifest; return
    the manifest path. Paths in the manifest are relative to it."""
    _check_cohort_args(n_reference, n_test, n_external, shape, spacing)
    out = Path(out_dir)
    for sub in ("images", "labels", "rois"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for c in cohort_plan(n_reference, n_test, n_external, seed):
        ph = make_phantom(c["seed"], c["sex"], c["age"], shape, spacing, c["pathology"], c["kernel"])
        cid = c["case_id"]
        row = dict(case_id=cid, image=f"images/{cid}.nii.gz", label=f"labels/{cid}.nii.gz",
                   sex=c["sex"], age=c["age"], dataset=c["dataset"], split=c["split"], scanner=c["scanner"],
                   kernel=c["kernel"], site=c["site"], slice_thickness_mm=f"{ph.spacing[2]:g}")
        hu = np.clip(np.rint(ph.hu), -1024, 3071).astype(np.int16)
        save_nifti(hu, ph.affine, out / row["image"])
        save_nifti(ph.labels.astype(np.uint8), ph.affine, out / row["label"])
        for name in PATHOLOGY_ROIS:
            row[f"roi:{name}"] = ""
            if name in ph.rois:
                row[f"roi:{name}"] = f"rois/{cid}_{name}.nii.gz"
                save_nifti(ph.rois[name].astype(np.uint8), ph.affine, out / row[f"roi:{name}"])
        rows.append(row)
    return write_manifest(out, rows, MANIFEST_COLUMNS)


def _check_cohort_args(n_reference, n_test, n_external, shape, spacing):
    if min(n_reference, n_test, n_external) < 0:
        raise InputError("cohort size", "case counts must be >= 0")
    if n_test > n_reference:
        raise InputError("n_test", f"{n_test} test cases but only {n_reference} reference cases")
    if len(shape) != 3 or min(shape) < 8:
        raise InputError("shape", f"need three sizes >= 8, got {tuple(shape)}")
    if np.size(spacing) not in (1, 3) or np.min(spacing) <= 0:
        raise InputError("spacing", f"need one or three positive values (mm), got {spacing}")
