"""Synthetic thorax phantoms: labels, Hounsfield units, orientation, variation, cohort IO."""
from __future__ import annotations

import csv
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from agg2exp_core.io import phantoms
from agg2exp_core.errors import InputError
from agg2exp_core.io.case_fields import manifest_fields
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.labels import THORAX_LABELS

L = {n: i for i, n in enumerate(THORAX_LABELS)}
LUNG = [L[n] for n in THORAX_LABELS if n.startswith("lung_")]


@pytest.fixture(scope="module")
def healthy():
    """A small set of healthy phantoms across sex and age."""
    return [phantoms.make_phantom(s, "FM"[s % 2], 20 + 10 * s) for s in range(8)]


@pytest.fixture(scope="module")
def sick():
    both = ("pleural_effusion", "consolidation")
    return [phantoms.make_phantom(100 + s, "FM"[s % 2], 60, pathology=both, kernel="sharp")
            for s in range(4)]


def _centroid(ph, name):
    return np.argwhere(ph.labels == L[name]).mean(0)


def _median(ph, *names):
    return float(np.median(ph.hu[np.isin(ph.labels, [L[n] for n in names])]))


def test_arrays_and_affine(healthy):
    ph = healthy[0]
    assert ph.hu.shape == ph.labels.shape == (64, 48, 48)
    assert ph.hu.dtype == np.float32 and ph.labels.dtype == np.uint8
    assert np.allclose(np.diag(ph.affine), [6, 6, 6, 1])
    centre = ph.affine @ np.r_[(np.array(ph.hu.shape) - 1) / 2, 1]
    assert np.allclose(centre[:3], 0)                     # origin centred
    assert ph.rois == {}


def test_every_label_present(healthy, sick):
    for ph in healthy + sick:
        missing = set(range(len(THORAX_LABELS))) - set(np.unique(ph.labels).tolist())
        assert not missing, [THORAX_LABELS[i] for i in missing]


def test_thin_structures_survive_the_grid(healthy):
    """Ribs, cartilages, veins and thyroid keep enough voxels to be learnable at 6 mm."""
    for ph in healthy:
        counts = np.bincount(ph.labels.ravel(), minlength=len(THORAX_LABELS))
        for name, least in (("ribs", 1000), ("costal_cartilages", 250), ("pulmonary_vein", 100),
                            ("thyroid_gland", 60), ("trachea", 100), ("sternum", 150)):
            assert counts[L[name]] >= least, (name, counts[L[name]])
        # Each rib is at least two voxels thick: most rib voxels survive one erosion in-plane.
        ribs = ph.labels == L["ribs"]
        assert ndimage.binary_erosion(ribs, np.ones((2, 2, 1))).sum() > 0.2 * ribs.sum()


def test_hounsfield_units_per_tissue(healthy):
    for ph in healthy:
        assert -900 <= _median(ph, *[THORAX_LABELS[i] for i in LUNG]) <= -750
        for bone in ("ribs", "vertebrae", "sternum"):
            assert _median(ph, bone) > 200, bone
        for soft in ("heart", "aorta"):
            assert 0 <= _median(ph, soft) <= 200, soft
        assert 50 <= _median(ph, "costal_cartilages") <= 250
        assert 30 <= _median(ph, "thyroid_gland") <= 150
        assert 0 <= _median(ph, "autochthon_left", "autochthon_right") <= 100
        trachea = ph.hu[ph.labels == L["trachea"]]
        assert np.percentile(trachea, 10) < -600          # an air lumen inside the wall
        # Subcutaneous fat: the second voxel shell under the skin.
        body = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(ph.hu > -500, 2, 0)], 2)
        cross = ndimage.generate_binary_structure(2, 1)[:, :, None]   # in-plane only
        e1 = ndimage.binary_erosion(body, cross)
        shell = e1 & ~ndimage.binary_erosion(e1, cross)
        assert -200 < np.median(ph.hu[shell]) < 0
        assert np.median(ph.hu[~body]) < -950             # air outside


def test_orientation_ras(healthy):
    """x grows to the patient's right, y anterior, z superior."""
    for ph in healthy:
        left = np.argwhere(np.isin(ph.labels, LUNG[:2])).mean(0)
        right = np.argwhere(np.isin(ph.labels, LUNG[2:])).mean(0)
        assert left[0] < right[0]
        assert _centroid(ph, "autochthon_left")[0] < _centroid(ph, "autochthon_right")[0]
        heart, spine = _centroid(ph, "heart"), _centroid(ph, "vertebrae")
        assert spine[1] < heart[1]                        # spine posterior
        assert heart[0] < spine[0]                        # heart to the left
        assert _centroid(ph, "sternum")[1] > heart[1]     # sternum anterior
        assert _centroid(ph, "thyroid_gland")[2] > heart[2]
        # Lobes: upper above lower; the descending aorta runs left of the spine.
        assert _centroid(ph, "lung_upper_lobe_left")[2] > _centroid(ph, "lung_lower_lobe_left")[2]
        assert _centroid(ph, "lung_upper_lobe_right")[2] > _centroid(ph, "lung_middle_lobe_right")[2]
        k = int(heart[2])
        aorta = np.argwhere(ph.labels[:, :, k] == L["aorta"])
        assert aorta[:, 0].min() < spine[0]


def test_deterministic_from_seed():
    a = phantoms.make_phantom(7, "F", 44, pathology=("consolidation",))
    b = phantoms.make_phantom(7, "F", 44, pathology=("consolidation",))
    c = phantoms.make_phantom(8, "F", 44, pathology=("consolidation",))
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.rois["consolidation"], b.rois["consolidation"])
    assert not np.array_equal(a.hu, c.hu) and not np.array_equal(a.labels, c.labels)


def test_males_larger_than_females():
    def volumes(sex):
        out = []
        for s in range(6):
            ph = phantoms.make_phantom(s, sex, 50)
            out.append(((ph.hu > -500).sum(), np.isin(ph.labels, LUNG).sum(),
                        (ph.labels == L["heart"]).sum()))
        return np.mean(out, 0)
    m, f = volumes("M"), volumes("F")
    assert np.all(m > 1.1 * f), (m, f)                   # ~9 % per axis, ~25 % in volume


def test_bone_density_falls_with_age():
    meds = [[_median(phantoms.make_phantom(3, "M", age), bone) for age in (25, 55, 85)]
            for bone in ("vertebrae", "ribs", "sternum")]
    for bone in meds:
        assert bone[0] > bone[1] > bone[2]


def test_lung_denser_with_age_and_posteriorly():
    young, old = (phantoms.make_phantom(4, "F", a) for a in (25, 85))
    names = [THORAX_LABELS[i] for i in LUNG]
    assert _median(old, *names) > _median(young, *names)
    lung = np.isin(young.labels, LUNG)
    y = np.argwhere(lung)[:, 1]
    hu = young.hu[lung]
    assert np.median(hu[y < np.percentile(y, 25)]) > np.median(hu[y > np.percentile(y, 75)])


def test_pathology_masks(sick):
    for ph in sick:
        eff, con = ph.rois["pleural_effusion"], ph.rois["consolidation"]
        assert eff.dtype == bool and eff.any() and con.any()
        assert np.all(ph.labels[eff] == 0)                # fluid is not lung
        assert np.all(np.isin(ph.labels[con], LUNG))      # consolidated lung keeps its lobe
        assert not (eff & con).any()
        assert 0 <= np.median(ph.hu[eff]) <= 40
        assert -100 <= np.median(ph.hu[con]) <= 120       # the sharp kernel overshoots edges
        # 5-15 % of one lung, dependent (posterior) part of it.
        side = np.argwhere(eff)[:, 0].mean() > ph.labels.shape[0] / 2
        ids = LUNG[2:] if side else LUNG[:2]
        frac = eff.sum() / (eff.sum() + np.isin(ph.labels, ids).sum())
        assert 0.18 <= frac <= 0.38, frac
        lung_y = np.argwhere(np.isin(ph.labels, ids))[:, 1].mean()
        assert np.argwhere(eff)[:, 1].mean() < lung_y
        assert con.sum() >= 100


def test_sharp_kernel_is_noisier():
    std = {k: float(phantoms.make_phantom(2, "M", 40, kernel=k).hu[:4, :4, :].std())
           for k in phantoms.KERNELS}
    assert 10 < std["standard"] < 30 and std["sharp"] > 1.5 * std["standard"]


def test_same_anatomy_at_another_resolution():
    """Geometry lives in millimetres: a 3 mm grid holds the same organs as the 6 mm one."""
    a = phantoms.make_phantom(5, "M", 50)
    b = phantoms.make_phantom(5, "M", 50, shape=(128, 96, 96), spacing=(3.0, 3.0, 3.0))
    for name in ("heart", "vertebrae", "lung_lower_lobe_right", "aorta"):
        va, vb = (a.labels == L[name]).sum() * 216, (b.labels == L[name]).sum() * 27
        assert abs(va - vb) < 0.12 * va, name
        ca = a.affine @ np.r_[_centroid(a, name), 1]
        cb = b.affine @ np.r_[_centroid(b, name), 1]
        assert np.linalg.norm(ca - cb) < 4.0, name


def test_fast_enough():
    phantoms.make_phantom(0, "M", 50)
    t = time.perf_counter()
    for s in range(3):
        phantoms.make_phantom(s, "F", 50, pathology=("pleural_effusion",), kernel="sharp")
    assert (time.perf_counter() - t) / 3 < 1.0


def test_bad_input():
    with pytest.raises(InputError):
        phantoms.make_phantom(0, "X", 50)
    with pytest.raises(InputError):
        phantoms.make_phantom(0, "F", 50, pathology=("tumour",))
    with pytest.raises(InputError):
        phantoms.make_phantom(0, "F", 50, kernel="soft")
    with pytest.raises(InputError):
        phantoms.generate_cohort("/nonexistent", n_reference=2, n_test=3)


def test_cohort_plan_default():
    plan = phantoms.cohort_plan(20, 8, 16, 0)
    ref = [c for c in plan if c["dataset"] == "reference"]
    ext = [c for c in plan if c["dataset"] == "external"]
    assert [c["case_id"] for c in ref[:2]] == ["ref-000", "ref-001"]
    assert ext[0]["case_id"] == "ext-000"
    assert len(ref) == 20 and sum(c["split"] == "test" for c in ref) == 8
    assert all(c["split"] == "test" and c["kernel"] == "sharp" for c in ext)
    assert not any(c["pathology"] for c in ref)
    assert sum(bool(c["pathology"]) for c in ext) >= 5
    for group in (ref, ext):
        assert abs(sum(c["sex"] == "F" for c in group) - len(group) / 2) <= 1
        assert all(20 <= c["age"] <= 90 and isinstance(c["age"], int) for c in group)
    assert plan == phantoms.cohort_plan(20, 8, 16, 0)


def test_generate_cohort_roundtrip(tmp_path):
    manifest = phantoms.generate_cohort(tmp_path / "c", n_reference=3, n_test=1, n_external=3,
                                        shape=(40, 32, 32), spacing=(8.0, 8.0, 8.0), seed=1)
    with open(manifest) as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = fh.readline().strip().split(",")
    assert header == ["case_id", "image", "label", "sex", "age", "dataset", "split", "scanner", "kernel", "site",
                      "slice_thickness_mm", "roi:pleural_effusion", "roi:consolidation"]
    # metadata as the phantoms were made: the external cohort's sharp kernel is scanner B at a third site
    assert [(r["scanner"], r["kernel"], r["site"]) for r in rows] == [
        ("A", "standard", "north"), ("A", "standard", "east"), ("A", "standard", "north"),
        ("B", "sharp", "south"), ("B", "sharp", "south"), ("B", "sharp", "south")]
    fields = manifest_fields(manifest, read_manifest(manifest))
    assert dict(zip(fields.name, fields.kind)) == {"scanner": "categorical", "kernel": "categorical",
                                                   "site": "categorical", "slice_thickness_mm": "numeric"}
    assert set(fields[fields.name == "slice_thickness_mm"].number) == {8.0}
    assert [r["case_id"] for r in rows] == ["ref-000", "ref-001", "ref-002",
                                            "ext-000", "ext-001", "ext-002"]
    assert sorted(r["split"] for r in rows[:3]) == ["test", "train", "train"]
    assert any(r["roi:pleural_effusion"] or r["roi:consolidation"] for r in rows[3:])
    for r in rows:
        img, lab = nib.load(manifest.parent / r["image"]), nib.load(manifest.parent / r["label"])
        assert img.shape == lab.shape == (40, 32, 32)
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert np.allclose(img.affine, lab.affine) and np.allclose(np.diag(img.affine), [8, 8, 8, 1])
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        hu = np.asanyarray(img.dataobj)
        assert hu.dtype == np.int16 and hu.min() >= -1024
        for roi in ("roi:pleural_effusion", "roi:consolidation"):
            if r[roi]:
                m = np.asanyarray(nib.load(manifest.parent / r[roi]).dataobj)
                assert m.dtype == np.uint8 and m.any()
    # The files hold exactly what make_phantom returns for that case.
    spec = phantoms.cohort_plan(3, 1, 3, 1)[0]
    ph = phantoms.make_phantom(spec["seed"], spec["sex"], spec["age"], (40, 32, 32), (8.0, 8.0, 8.0))
    assert np.array_equal(np.asanyarray(nib.load(manifest.parent / rows[0]["label"]).dataobj), ph.labels)
    assert np.allclose(nib.load(manifest.parent / rows[0]["image"]).affine, ph.affine)


def test_cli_subcommand(tmp_path, capsys):
    from agg2exp_core.cli import main

    assert main(["phantoms", "--out", str(tmp_path / "cli"), "--n-reference", "2", "--n-test", "1",
                 "--n-external", "1", "--shape", "32", "24", "24", "--spacing", "12", "--seed", "3"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("manifest.csv") and (tmp_path / "cli" / "manifest.csv").exists()
    assert nib.load(tmp_path / "cli" / "images" / "ref-000.nii.gz").shape == (32, 24, 24)
