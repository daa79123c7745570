"""Scan files that read what they should not, or hang (issue 21): detached headers that name
another file or a FIFO, FIFOs as scans, zero voxel sizes, complex voxels, DICOM tags of the
wrong arity or type, and a DICOM series whose SliceThickness hides its real extent.
Each is one ``InputError`` naming the file, raised before any voxel is read."""
from __future__ import annotations

import os
import threading

import nibabel as nib
import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_volume
from agg2exp_core.io.limits import RESAMPLED_LIMIT_VARIABLE
from dicom_series import write_ct_series

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("pydicom")

DETACHED = {".mhd": "ElementDataFile = {}", ".nhdr": "data file: {}"}


def detached(tmp_path, suffix: str):
    """A 4x3x2 int16 volume as a SimpleITK-written detached header and its data file."""
    volume = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    header = tmp_path / f"scan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(header))
    return header, volume


def point_at(header, target: str) -> None:
    """Tamper the header's data file line so that it names ``target``."""
    key = DETACHED[header.suffix].split("{")[0]
    lines = [DETACHED[header.suffix].format(target) if line.startswith(key) else line
             for line in header.read_text().splitlines()]
    header.write_text("\n".join(lines) + "\n")


def load_with_deadline(path, seconds: float = 20.0):
    """load_volume in a thread: a read that blocks fails the test instead of hanging it."""
    outcome = {}

    def run():
        try:
            outcome["value"] = load_volume(path)
        except Exception as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"reading {path} blocked for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("suffix", list(DETACHED))
def test_an_untampered_detached_header_reads_its_voxels(tmp_path, suffix):
    header, volume = detached(tmp_path, suffix)
    data, _ = load_volume(header)
    assert np.array_equal(data, volume.transpose(2, 1, 0).astype(np.float32))


@pytest.mark.parametrize("suffix", list(DETACHED))
def test_a_header_naming_a_file_outside_its_folder_is_refused(tmp_path, suffix):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(bytes(range(48)))  # exactly the 48 bytes the header declares
    (tmp_path / "cohort").mkdir()
    header, _ = detached(tmp_path / "cohort", suffix)
    point_at(header, str(secret))
    with pytest.raises(InputError, match=f"{header.name}: names the data file .* by an absolute path"):
        load_volume(header)
    point_at(header, "../secret.txt")
    with pytest.raises(InputError, match="outside the header's folder; not read"):
        load_volume(header)
    (tmp_path / "cohort" / "link.raw").symlink_to(secret)
    point_at(header, "link.raw")
    with pytest.raises(InputError, match="outside the header's folder; not read"):
        load_volume(header)


@pytest.mark.parametrize("suffix", list(DETACHED))
def test_a_header_naming_a_fifo_or_a_file_of_another_size_is_refused_without_blocking(tmp_path, suffix):
    header, _ = detached(tmp_path, suffix)
    os.mkfifo(tmp_path / "pipe.raw")
    point_at(header, "pipe.raw")
    with pytest.raises(InputError, match="pipe.raw: not a regular file \\(a FIFO\\)"):
        load_with_deadline(header)
    (tmp_path / "long.raw").write_bytes(bytes(4096))
    point_at(header, "long.raw")
    with pytest.raises(InputError, match=f"{header.name}: its data file long.raw holds 4,096 bytes, the header "
                                         "declares 48"):
        load_with_deadline(header)
    point_at(header, "a.raw b.raw")
    with pytest.raises(InputError, match="names several data files"):
        load_volume(header)


def test_an_attached_metaimage_may_not_name_a_data_file_either(tmp_path):
    """A .mha whose last header line points elsewhere reads that file, like a .mhd."""
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(48))
    header, _ = detached(tmp_path, ".mhd")
    mha = tmp_path / "scan.mha"
    mha.write_text(header.read_text().replace("scan.raw", str(secret)))
    with pytest.raises(InputError, match="scan.mha: names the data file .* by an absolute path"):
        load_volume(mha)


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nrrd", "scan.mha"])
def test_a_fifo_given_as_a_scan_is_refused_without_blocking(tmp_path, name):
    os.mkfifo(tmp_path / name)
    with pytest.raises(InputError, match=f"{name}: not a regular file \\(a FIFO\\); not read"):
        load_with_deadline(tmp_path / name)


def test_a_nifti_with_a_zero_voxel_size_is_refused(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header["pixdim"][1:4] = [1.0, 0.0, 1.0]
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match="flat.nii.gz: voxel size \\(pixdim\\) 1, 0, 1 mm is not a size"):
        load_volume(tmp_path / "flat.nii.gz")


def test_complex_voxels_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 1 + 2j, np.complex64), np.eye(4)), str(tmp_path / "c.nii"))
    with pytest.raises(InputError, match="c.nii: complex voxels \\(complex64\\)"):
        load_volume(tmp_path / "c.nii")


def series(tmp_path, n: int = 4, step: float = 2.0):
    hu = np.zeros((8, 8, n), np.int16)
    return write_ct_series(tmp_path / "series", hu, np.diag([1.0, 1.0, step, 1.0]))


def retag(folder, index: int, **tags) -> None:
    import pydicom
    from pydicom.dataelem import DataElement
    from pydicom.datadict import tag_for_keyword

    path = sorted(folder.iterdir())[index]
    ds = pydicom.dcmread(path)
    for name, value in tags.items():
        if isinstance(value, str):  # a text where a number belongs: pydicom refuses to set it as IS
            ds[tag_for_keyword(name)] = DataElement(tag_for_keyword(name), "LO", value)
        else:
            setattr(ds, name, value)
    ds.save_as(path)


@pytest.mark.parametrize("tags, problem", [
    ({"ImageOrientationPatient": [1, 0, 0, 0, 1]}, "ImageOrientationPatient has 5 values, expected 6"),
    ({"ImagePositionPatient": [0, 0]}, "ImagePositionPatient has 2 values, expected 3"),
    ({"InstanceNumber": "abc"}, "InstanceNumber 'abc' is not an integer"),
    ({"PixelSpacing": [0, 1]}, "PixelSpacing 0, 1 is not a positive size"),
])
def test_malformed_dicom_tags_are_one_line_naming_the_file(tmp_path, tags, problem):
    folder = series(tmp_path)
    retag(folder, 2, **tags)
    with pytest.raises(InputError) as err:
        load_volume(folder)
    assert str(err.value) == f"{folder}: slice_0002.dcm: {problem}"


def test_the_dicom_size_check_measures_the_slice_step(tmp_path, monkeypatch):
    """Three slices 20 m apart claiming SliceThickness 1: 40 m of extent, refused on the headers."""
    folder = series(tmp_path, n=3, step=20_000.0)
    for i in range(3):
        retag(folder, i, SliceThickness=1.0)
    monkeypatch.setenv(RESAMPLED_LIMIT_VARIABLE, str(100_000))
    with pytest.raises(InputError, match="become about 3,840,000 at the model's 1x1x1 mm spacing"):
        load_volume(folder, target_spacing=(1.0, 1.0, 1.0))
    good = series(tmp_path / "fine", n=3, step=2.0)  # 8x8x(3 slices of 2 mm) = 384 voxels at 1 mm
    load_volume(good, target_spacing=(1.0, 1.0, 1.0))
