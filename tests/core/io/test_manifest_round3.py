"""Manifests that read what they should not (issue 21): paths out of the cohort root
(absolute, '..', symlinks), encodings other than UTF-8, case ids that collide on a
case-insensitive file system or are too long to name a file. One line each, naming the
manifest and the row, before anything is computed."""
from __future__ import annotations

import os

import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io.manifest import MAX_CASE_ID, read_manifest
from cohorts import make_checkpoint, make_cohort, write_nifti


@pytest.fixture()
def cohort(tmp_path):
    """A cohort folder with one scan, and a secret scan beside it (outside the cohort)."""
    root = tmp_path / "cohort"
    root.mkdir()
    write_nifti(root / "ct.nii.gz", np.ones((2, 2, 2), np.int16))
    write_nifti(tmp_path / "secret.nii.gz", np.ones((2, 2, 2), np.int16))
    return root


def manifest(root, *rows: str, name: str = "m.csv"):
    path = root / name
    path.write_text("case_id,image\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("path", ["ABS", "../secret.nii.gz", "link.nii.gz"])
def test_a_path_out_of_the_cohort_root_is_refused_naming_row_and_column(cohort, path):
    (cohort / "link.nii.gz").symlink_to(cohort.parent / "secret.nii.gz")
    text = str(cohort.parent / "secret.nii.gz") if path == "ABS" else path
    m = manifest(cohort, "c0,ct.nii.gz", f"c1,{text}")
    with pytest.raises(InputError) as err:
        read_manifest(m)
    message = str(err.value)
    assert message.startswith(f"{m}: row 3 (case 'c1'), column image: {text} resolves to "
                              f"{cohort.parent / 'secret.nii.gz'}, outside the cohort root {cohort}")
    assert "--allow-outside-root" in message and "\n" not in message
    frame = read_manifest(m, allow_outside_root=True)  # the escape hatch
    assert frame.image.iloc[1] == str(cohort.parent / "secret.nii.gz")
    frame = read_manifest(m, cohort_root=cohort.parent)  # a wider root holds it
    assert len(frame) == 2


def test_an_absolute_path_inside_the_root_and_a_symlink_within_it_are_kept(cohort):
    (cohort / "scans").mkdir()
    (cohort / "scans" / "alias.nii.gz").symlink_to(cohort / "ct.nii.gz")
    m = manifest(cohort, f"c0,{cohort / 'ct.nii.gz'}", "c1,scans/alias.nii.gz")
    assert list(read_manifest(m).image) == [str(cohort / "ct.nii.gz")] * 2


def test_the_cli_refuses_an_outside_path_in_one_line_and_takes_the_flags(tmp_path, capfd):
    from agg2exp_core import cli

    cohort = make_cohort(tmp_path / "cohort", n=2).parent
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    m = cohort / "outside.csv"
    m.write_text(f"case_id,image\nc0,c0_ct.nii.gz\nc1,{tmp_path / 'm.pt'}\n")
    db = tmp_path / "store" / "s.duckdb"
    capfd.readouterr()
    rc = cli.main(["precompute", "--manifest", str(m), "--checkpoint", str(checkpoint), "--db", str(db),
                   "--device", "cpu"])
    err = capfd.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "row 3 (case 'c1'), column image" in err, err
    assert not db.exists()
    m.write_text("case_id,image\nc0,c0_ct.nii.gz\nc1,../cohort/c1_ct.nii.gz\n")
    rc = cli.main(["precompute", "--manifest", str(m), "--checkpoint", str(checkpoint), "--db", str(db),
                   "--device", "cpu", "--cohort-root", str(tmp_path / "elsewhere")])
    assert rc == 2 and "--cohort-root" in capfd.readouterr().err
    rc = cli.main(["precompute", "--manifest", str(m), "--checkpoint", str(checkpoint), "--db", str(db),
                   "--device", "cpu", "--cohort-root", str(tmp_path)])
    assert rc == 0, capfd.readouterr().err[-2000:]


@pytest.mark.parametrize("encoding, where", [("latin-1", "byte 0xf4 on line 3"),
                                             ("utf-16", "byte 0xff on line 1 (it looks like UTF-16)")])
def test_a_manifest_not_in_utf8_names_the_encoding_and_the_byte(cohort, encoding, where):
    m = cohort / "m.csv"
    m.write_bytes("case_id,image,dataset\nc0,ct.nii.gz,a\nc1,ct.nii.gz,Hôpital-é\n".encode(encoding))
    with pytest.raises(InputError) as err:
        read_manifest(m)
    assert str(err.value) == f"{m}: not UTF-8 text: {where}; save the CSV as UTF-8"


def test_a_utf8_manifest_with_a_byte_order_mark_is_read(cohort):
    m = cohort / "m.csv"
    m.write_bytes("case_id,image,dataset\nc0,ct.nii.gz,Hôpital\n".encode("utf-8-sig"))
    assert list(read_manifest(m).dataset) == ["Hôpital"]


def test_case_ids_that_differ_only_in_letter_case_are_refused(cohort):
    m = manifest(cohort, "Case1,ct.nii.gz", "c2,ct.nii.gz", "case1,ct.nii.gz")
    with pytest.raises(InputError) as err:
        read_manifest(m)
    assert str(err.value) == (f"{m}: case ids 'Case1' (row 2) and 'case1' (row 4) differ only in letter case; "
                              "their files would collide on a case-insensitive file system")


def test_a_case_id_too_long_for_a_file_name_is_refused_before_any_work(cohort):
    long_id = "c" * 300
    m = manifest(cohort, "c0,ct.nii.gz", f"{long_id},ct.nii.gz")
    with pytest.raises(InputError, match=f"m.csv: case_id in row 3 has 300 characters, more than {MAX_CASE_ID}"):
        read_manifest(m)
    assert len(read_manifest(manifest(cohort, f"{'c' * MAX_CASE_ID},ct.nii.gz")).case_id.iloc[0]) == MAX_CASE_ID
    os.stat(cohort / "m.csv")


def test_a_fifo_in_a_manifest_is_named_as_such(cohort):
    os.mkfifo(cohort / "pipe.nii.gz")
    m = manifest(cohort, "c0,pipe.nii.gz")
    with pytest.raises(InputError, match="c0': image is not a regular file \\(a FIFO or device\\?\\): pipe.nii.gz"):
        read_manifest(m)
