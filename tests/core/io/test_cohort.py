"""Manifest validation and NIfTI loading: affine kept, bad input named in one line."""
from __future__ import annotations


import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from agg2exp_core.io.images import load_case, load_nifti, save_like
from agg2exp_core.io.manifest import read_manifest, read_metadata
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.errors import InputError


def write_nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


LPS_AFFINE = np.array([[-2.0, 0, 0, 100], [0, -2.0, 0, 80], [0, 0, 3.0, -40], [0, 0, 0, 1]])


@pytest.fixture
def cohort(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.uniform(-1024, 1024, size=(10, 8, 6)).astype(np.int16)
    label = rng.integers(0, 3, size=(10, 8, 6)).astype(np.uint8)
    write_nifti(tmp_path / "img.nii.gz", image, LPS_AFFINE)
    write_nifti(tmp_path / "lab.nii.gz", label, LPS_AFFINE)
    write_nifti(tmp_path / "roi.nii.gz", (label == 1).astype(np.uint8), LPS_AFFINE)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,image,label,sex,age,dataset,split,roi:effusion\n"
                        "c1,img.nii.gz,lab.nii.gz,F,63,ref,train,roi.nii.gz\n")
    return tmp_path, manifest, image, label


def test_manifest_resolves_paths_and_parses_metadata(cohort):
    root, manifest, *_ = cohort
    frame = read_manifest(manifest)
    row = frame.iloc[0]
    assert row.image == str((root / "img.nii.gz").resolve())
    assert row.sex == "F" and row.age == 63.0 and row.dataset == "ref" and row.split == "train"
    assert row["roi:effusion"].endswith("roi.nii.gz")


def test_load_case_reorients_to_ras_and_keeps_world_coordinates(cohort):
    _, manifest, image, label = cohort
    row = read_manifest(manifest).iloc[0].to_dict()
    case = load_case(row, Preprocessing(spacing=None), n_labels=3)
    assert case.image.shape == (1, 10, 8, 6)
    assert np.all(np.diag(case.affine)[:3] > 0), "RAS: positive diagonal"
    # The voxel that held original voxel (0,0,0) must sit at the same world position.
    world = LPS_AFFINE @ np.array([0, 0, 0, 1.0])
    ijk = np.round(np.linalg.inv(case.affine) @ world).astype(int)[:3]
    expected = (np.clip(image[0, 0, 0], -1024, 1024) + 1024) / 2048
    assert float(case.image[0][tuple(ijk)]) == pytest.approx(expected, abs=1e-5)
    assert int(case.label[tuple(ijk)]) == label[0, 0, 0]
    assert case.rois["effusion"].sum() == (label == 1).sum()
    assert float(case.image.min()) >= 0 and float(case.image.max()) <= 1


def test_resampling_changes_grid_not_world_extent(cohort):
    _, manifest, *_ = cohort
    row = read_manifest(manifest).iloc[0].to_dict()
    case = load_case(row, Preprocessing(spacing=(4.0, 4.0, 3.0)), n_labels=3)
    assert case.spacing == pytest.approx((4.0, 4.0, 3.0))
    for n_old, s_old, n_new, s_new in zip((10, 8, 6), (2, 2, 3), case.image.shape[1:], (4, 4, 3)):
        assert abs((n_new - 1) * s_new - (n_old - 1) * s_old) <= s_new  # same physical extent
    assert case.label.shape == case.image.shape[1:]


def test_save_like_round_trip_keeps_affine(cohort, tmp_path):
    _, manifest, *_ = cohort
    case = load_case(read_manifest(manifest).iloc[0].to_dict(), Preprocessing(spacing=None))
    out = save_like(case.image[0].numpy(), case, tmp_path / "out" / "x.nii.gz")
    data, affine = load_nifti(out)
    np.testing.assert_allclose(affine, case.affine)
    np.testing.assert_allclose(data, case.image[0].numpy(), atol=1e-6)


@pytest.mark.parametrize("body, problem", [
    ("case_id,label\nc1,x\n", "missing column(s) image"),
    ("case_id,image\nc1,img.nii.gz\nc1,img.nii.gz\n", "duplicate case_id 'c1'"),
    ("case_id,image,sex\nc1,img.nii.gz,X\n", "unknown sex code 'X'"),
    ("case_id,image,age\nc1,img.nii.gz,250\n", "impossible age 250"),
    ("case_id,image,age\nc1,img.nii.gz,old\n", "age 'old' is not a number"),
    ("case_id,image\nc1,nowhere.nii.gz\n", "image file not found: nowhere.nii.gz"),
    ("case_id,image,split\nc1,img.nii.gz,holdout\n", "unknown split 'holdout'"),
])
def test_manifest_errors_name_file_and_problem(cohort, body, problem):
    root, *_ = cohort
    bad = root / "bad.csv"
    bad.write_text(body)
    with pytest.raises(InputError) as err:
        read_manifest(bad)
    message = str(err.value)
    assert message.startswith(str(bad)) and problem in message and "\n" not in message


def test_metadata_validation(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,sex,age\ns1,m,40\ns2,,\n")
    frame = read_metadata(meta)
    assert frame.sex.iloc[0] == "M" and pd.isna(frame.sex.iloc[1]) and frame.age.tolist()[0] == 40.0
    meta.write_text("case_id,sex,age\ns1,M,-3\n")
    with pytest.raises(InputError, match="impossible age"):
        read_metadata(meta)


def _case_row(root, **paths):
    return {"case_id": "c1", "image": str(root / "img.nii.gz"), "label": "", **paths}


def test_truncated_nifti(cohort):
    root, *_ = cohort
    raw = (root / "img.nii.gz").read_bytes()
    (root / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cannot read NIfTI"):
        load_case(_case_row(root, image=str(root / "trunc.nii.gz")))


def test_non_3d_nan_shape_affine_and_label_range(cohort):
    root, *_ = cohort
    write_nifti(root / "4d.nii.gz", np.zeros((4, 4, 4, 2), np.float32))
    with pytest.raises(InputError, match="expected a 3-D volume"):
        load_nifti(root / "4d.nii.gz")
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 1, 1] = np.nan
    write_nifti(root / "nan.nii.gz", nan)
    with pytest.raises(InputError, match="1 NaN/Inf voxels"):
        load_nifti(root / "nan.nii.gz")
    write_nifti(root / "small.nii.gz", np.zeros((10, 8, 5), np.uint8), LPS_AFFINE)
    with pytest.raises(InputError, match="does not match the image's"):
        load_case(_case_row(root, label=str(root / "small.nii.gz")))
    write_nifti(root / "shifted.nii.gz", np.zeros((10, 8, 6), np.uint8), np.eye(4))
    with pytest.raises(InputError, match="affine does not match"):
        load_case(_case_row(root, label=str(root / "shifted.nii.gz")))
    write_nifti(root / "big.nii.gz", np.full((10, 8, 6), 7, np.uint8), LPS_AFFINE)
    with pytest.raises(InputError, match="label value 7 outside the label set 0..2"):
        load_case(_case_row(root, label=str(root / "big.nii.gz")), n_labels=3)
