"""Scans in every format a PACS or a lab hands over: DICOM series folders, NIfTI, NRRD, MHA.

The oracle for DICOM is the NIfTI written from the same phantom (nibabel); for NRRD and
MHA it is SimpleITK's own conversion of that NIfTI. Voxel values must be identical and
the RAS affines equal, so that every output lies on the original scan.
"""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_case, load_volume, save_nifti
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.io.phantoms import make_phantom
from agg2exp_core.io.preprocessing import Preprocessing
from dicom_series import oblique_affine, write_ct_series

pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

SPACING = (12.0, 12.0, 12.0)


@pytest.fixture(scope="module")
def phantom():
    p = make_phantom(0, "M", 60, shape=(24, 20, 16), spacing=SPACING)
    return np.clip(np.round(p.hu), -1024, 3071), p.labels, p.affine


def orientations(hu, affine):
    """The same phantom stored axially, obliquely and as sagittal slices."""
    return {"axial": (hu, affine), "oblique": (hu, oblique_affine(SPACING)),
            "sagittal": (hu.transpose(1, 2, 0), affine[:, [1, 2, 0, 3]])}


@pytest.mark.parametrize("orientation", ["axial", "oblique", "sagittal"])
def test_dicom_series_reads_back_like_the_nifti_of_the_same_phantom(phantom, tmp_path, orientation):
    hu, affine = orientations(phantom[0], phantom[2])[orientation]
    write_ct_series(tmp_path / "series", hu, affine)
    nifti = save_nifti(hu.astype(np.int16), affine, tmp_path / "scan.nii.gz")
    data, got_affine = load_volume(tmp_path / "series")
    expected, expected_affine = load_volume(nifti)
    assert data.dtype == np.float32 and data.shape == hu.shape
    np.testing.assert_array_equal(data, expected)              # same HU in every voxel
    np.testing.assert_allclose(got_affine, expected_affine, atol=1e-4)
    np.testing.assert_allclose(got_affine, affine, atol=1e-4)  # and the phantom's own geometry


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_and_mha_read_back_identically(phantom, tmp_path, suffix):
    hu, affine = orientations(phantom[0], phantom[2])["oblique"]
    nifti = save_nifti(hu.astype(np.int16), affine, tmp_path / "scan.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / f"scan{suffix}"))  # ITK's own conversion
    data, got_affine = load_volume(tmp_path / f"scan{suffix}")
    expected, expected_affine = load_volume(nifti)
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_allclose(got_affine, expected_affine, atol=1e-4)


def test_itk_file_errors_name_the_file(tmp_path):
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\ntype: float\n")
    with pytest.raises(InputError, match="broken.nrrd: cannot read NRRD"):
        load_volume(tmp_path / "broken.nrrd")
    vector = sitk.GetImageFromArray(np.zeros((4, 4, 4, 3), np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "rgb.mha"))
    with pytest.raises(InputError, match="rgb.mha: expected one value per voxel, got 3 components"):
        load_volume(tmp_path / "rgb.mha")
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(tmp_path / "nan.mha"))
    with pytest.raises(InputError, match="nan.mha: 1 NaN/Inf voxels"):
        load_volume(tmp_path / "nan.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 5), np.float32)), str(tmp_path / "flat.mha"))
    with pytest.raises(InputError, match="flat.mha: expected a 3-D volume"):
        load_volume(tmp_path / "flat.mha")


def _second_series(folder, hu, affine):
    """Half the slices of another series in the same folder."""
    other = write_ct_series(folder.parent / "other", hu, affine, first_number=100)
    for f in sorted(other.iterdir())[:3]:
        f.rename(folder / f"other_{f.name}")


BROKEN_SERIES = {
    "missing slice": (dict(skip=(7,)), "uneven slice spacing (missing slice?): 24 mm between InstanceNumber 7 and 9"),
    "gantry tilt": (dict(shear_mm=2.0), "gantry tilt: slices are sheared by 9.46 degrees"),
    "tilt tag": (dict(gantry_tilt=12.0), "gantry tilt of 12 degrees"),
    "mixed series": (dict(), "mixed series: 2 SeriesInstanceUIDs in one folder"),
}


@pytest.mark.parametrize("case", list(BROKEN_SERIES))
def test_broken_series_is_one_line_naming_the_folder(phantom, tmp_path, case):
    options, problem = BROKEN_SERIES[case]
    hu, _, affine = phantom
    folder = write_ct_series(tmp_path / "series", hu, affine, **options)
    if case == "mixed series":
        _second_series(folder, hu, affine)
    with pytest.raises(InputError) as err:
        load_volume(folder)
    message = str(err.value)
    assert message.startswith(f"{folder}: ") and problem in message and "\n" not in message


def test_shuffled_instance_numbers_and_single_files_are_refused(phantom, tmp_path):
    hu, _, affine = phantom
    folder = write_ct_series(tmp_path / "series", hu, affine)
    import pydicom

    first, last = sorted(folder.iterdir())[0], sorted(folder.iterdir())[5]
    a, b = pydicom.dcmread(first), pydicom.dcmread(last)
    a.InstanceNumber, b.InstanceNumber = b.InstanceNumber, a.InstanceNumber  # MONAI would stack them wrongly
    a.save_as(first), b.save_as(last)
    with pytest.raises(InputError, match="slice positions do not follow InstanceNumber order"):
        load_volume(folder)
    with pytest.raises(InputError, match="a DICOM file holds one slice; give the folder of its series"):
        load_volume(first)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM files in the folder"):
        load_volume(tmp_path / "empty")


def test_case_from_dicom_with_a_flipped_nifti_label_lies_on_the_scan(phantom, tmp_path):
    """A label exported in another voxel order (LPS NIfTI) of the same grid is reoriented, not refused."""
    hu, labels, affine = phantom
    write_ct_series(tmp_path / "series", hu, affine)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:3, 3] = [hu.shape[0] - 1, hu.shape[1] - 1, 0]       # voxel (i, j, k) -> (I-1-i, J-1-j, k)
    save_nifti(labels[::-1, ::-1].astype(np.uint8), affine @ flip, tmp_path / "label_lps.nii.gz")
    save_nifti(hu.astype(np.int16), affine, tmp_path / "scan.nii.gz")
    save_nifti(labels.astype(np.uint8), affine, tmp_path / "label.nii.gz")
    (tmp_path / "m.csv").write_text("case_id,image,label\nd,series,label_lps.nii.gz\nn,scan.nii.gz,label.nii.gz\n")
    rows = read_manifest(tmp_path / "m.csv").to_dict("records")
    dicom, nifti = (load_case(r, Preprocessing(spacing=(6.0, 6.0, 6.0)), n_labels=17) for r in rows)
    np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-4)
    assert np.array_equal(dicom.image.numpy(), nifti.image.numpy())
    assert np.array_equal(dicom.label.numpy(), nifti.label.numpy()) and int(dicom.label.max()) > 10
    shifted = affine.copy()
    shifted[0, 3] += 5.0
    save_nifti(labels.astype(np.uint8), shifted, tmp_path / "label_off.nii.gz")
    with pytest.raises(InputError, match="label_off.nii.gz: affine does not match the image's affine"):
        load_case({**rows[0], "label": str(tmp_path / "label_off.nii.gz")})


def test_manifest_takes_series_folders_and_refuses_folders_without_dicom(phantom, tmp_path):
    write_ct_series(tmp_path / "series", phantom[0], phantom[2])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no scans here")
    (tmp_path / "ok.csv").write_text("case_id,image\nc1,series\n")
    assert read_manifest(tmp_path / "ok.csv").image.iloc[0] == str((tmp_path / "series").resolve())
    (tmp_path / "bad.csv").write_text("case_id,image\nc1,notes\n")
    with pytest.raises(InputError, match="bad.csv: case 'c1': image folder holds no DICOM files: notes"):
        read_manifest(tmp_path / "bad.csv")


TINY_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


def test_cli_precompute_over_a_dicom_cohort_equals_the_nifti_cohort(tmp_path, capsys):
    """The same phantoms as DICOM series and as NIfTI give the same store rows; a broken
    series fails alone, with its folder and problem in the failures table."""
    import nibabel as nib
    import pandas as pd
    import torch

    from agg2exp_core import store
    from agg2exp_core.cli import main
    from agg2exp_core.io.phantoms import generate_cohort
    from agg2exp_core.labels import THORAX_LABELS
    from agg2exp_core.models import build_network, save_checkpoint

    manifest = generate_cohort(tmp_path / "cohort", n_reference=2, n_test=0, n_external=0,
                               shape=(24, 16, 16), spacing=(16.0, 16.0, 16.0), seed=3)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for row in frame.itertuples():
        scan = nib.load(str(manifest.parent / row.image))
        write_ct_series(tmp_path / "cohort" / "dicom" / row.case_id, np.asarray(scan.dataobj), scan.affine)
    broken = write_ct_series(tmp_path / "cohort" / "dicom" / "broken", np.asarray(scan.dataobj), scan.affine, skip=(5,))
    dicom = pd.concat([frame.assign(image=[f"dicom/{c}" for c in frame.case_id]),
                       frame.iloc[[0]].assign(case_id="broken", image="dicom/broken")])
    dicom.to_csv(tmp_path / "cohort" / "dicom.csv", index=False)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", build_network(TINY_UNET, len(THORAX_LABELS)), TINY_UNET,
                                 THORAX_LABELS, Preprocessing(spacing=None), roi_size=(16, 16, 16))
    codes = {"nifti": 0, "dicom": 1}  # 1: a case failed
    rows = {}
    for name, path in (("nifti", manifest), ("dicom", tmp_path / "cohort" / "dicom.csv")):
        db = tmp_path / f"{name}.duckdb"
        assert main(["precompute", "--manifest", str(path), "--model", str(checkpoint), "--db", str(db),
                     "--method", "vg", "--device", "cpu"]) == codes[name]
        with store.connect(db, read_only=True) as con:
            rows[name] = con.execute("SELECT case_id, target_id, source_id, mass_abs, mass_pos FROM local_importance "
                                     "ORDER BY ALL").fetchall()
            failures = con.execute("SELECT case_id, message FROM failures").fetchall()
    assert "2 computed, 0 already done, 1 failed" in capsys.readouterr().out
    assert len(rows["dicom"]) == len(rows["nifti"]) >= 2 * 17 * 17
    np.testing.assert_allclose(np.array([r[3:] for r in rows["dicom"]], float),
                               np.array([r[3:] for r in rows["nifti"]], float), rtol=1e-6, atol=1e-9)
    assert [r[:3] for r in rows["dicom"]] == [r[:3] for r in rows["nifti"]]
    assert failures == [("broken", f"{broken}: uneven slice spacing (missing slice?): 32 mm between "
                                   "InstanceNumber 5 and 7, 16 mm elsewhere")]


def test_a_series_folder_is_fingerprinted_by_the_files_it_holds(tmp_path):
    """Resumption keys done-ness on the inputs: a DICOM folder counts as its files."""
    from agg2exp_core.pipeline.inputs import changed_inputs, input_fingerprint

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        (folder / f"slice{i}.dcm").write_bytes(bytes([i]) * 100)
    row = {"case_id": "c0", "image": str(folder)}
    stored = input_fingerprint(row)
    assert stored["image"]["size"] == 300 and changed_inputs(stored, row) == []
    (folder / "slice1.dcm").write_bytes(bytes([9]) * 100)   # same size, other content
    assert changed_inputs(stored, row) == ["image"]
