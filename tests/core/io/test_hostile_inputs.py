"""Hostile input (issue 15): case ids and label names that walk out of their folder, a
decompression bomb, RoI names that clash with class names, duplicate label names.
Each is one line (exit 2) up front, or one recorded failure while the cohort goes on."""
from __future__ import annotations

import gzip
import io

import duckdb
import nibabel as nib
import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_nifti
from agg2exp_core.io.limits import DEFAULT_MAX_INPUT_VOXELS, DEFAULT_MAX_RESAMPLED_VOXELS, resampled_voxels
from agg2exp_core.io.manifest import file_safe_name, read_manifest
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models import build_network, save_checkpoint
from agg2exp_core.pipeline.precompute import precompute
from cohorts import (LABELS, SHAPE, SMALL_UNET, fingerprint, make_checkpoint, make_cohort,
                                      write_nifti)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    manifest = make_cohort(root / "cohort", n=3)
    return {"root": root, "manifest": manifest, "checkpoint": make_checkpoint(root / "m.pt")}


def call_cli(argv, capfd) -> tuple[int, str, str]:
    from agg2exp_core import cli
    capfd.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return rc, out, err


def assert_one_line(rc: int, err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, err[-3000:])
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def manifest_with(world, path, case_id: str = "c0", extra_header: str = "", extra_cell: str = ""):
    cohort = world["manifest"].parent
    path = cohort / f"{path.parent.name}_{path.name}"  # in the cohort root (issue 21), one per test
    path.write_text(f"case_id,image,label{extra_header}\n"
                    f"{case_id},{cohort / 'c0_ct.nii.gz'},{cohort / 'c0_seg.nii.gz'}{extra_cell}\n")
    return path


# ------------------------------------------------------------------ case ids and label names in paths
@pytest.mark.parametrize("case_id", ["../../escape", "/tmp/x", ".hidden", "a b", "c0/../../x", "..", "x\\y", "é"])
def test_an_unsafe_case_id_is_one_line_before_anything_is_written(world, tmp_path, capfd, case_id):
    manifest = manifest_with(world, tmp_path / "m.csv", f'"{case_id}"')
    with pytest.raises(InputError, match="not a safe file name"):
        read_manifest(manifest)
    db = tmp_path / "store" / "s.duckdb"
    rc, out, err = call_cli(["precompute", "--manifest", manifest, "--model", world["checkpoint"], "--db", db,
                             "--device", "cpu"], capfd)
    assert_one_line(rc, err, "m.csv", repr(case_id), "row 2")
    assert not db.parent.exists(), "nothing is created for a rejected manifest"
    assert not list(tmp_path.parent.glob("escape*")) and not list(tmp_path.rglob("*.npz"))


@pytest.mark.parametrize("case_id", ["c0", "00123", "A-1_b.2", "-x"])
def test_safe_case_ids_are_kept_as_written(world, tmp_path, case_id):
    assert read_manifest(manifest_with(world, tmp_path / "m.csv", case_id)).case_id.tolist() == [case_id]


def test_label_names_are_sanitised_in_file_names(world, tmp_path):
    hostile = ["background", "../../../evil", "a/b"]
    net = build_network(SMALL_UNET, len(hostile))
    checkpoint = save_checkpoint(tmp_path / "hostile.pt", net, SMALL_UNET, hostile, Preprocessing(spacing=None),
                                 roi_size=SHAPE)
    manifest = manifest_with(world, tmp_path / "m.csv")
    nifti = tmp_path / "out" / "nifti"
    summary = precompute(manifest, checkpoint, tmp_path / "out" / "s.duckdb", "vg", device="cpu",
                         nifti_dir=nifti, progress=False)
    assert summary.done == ["c0"], summary.line()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.nii.gz"))
    run = nifti.relative_to(tmp_path) / summary.run_id
    assert written == sorted(run / f"c0_{file_safe_name(n)}.nii.gz" for n in hostile), written
    assert [p for p in (nifti / summary.run_id).iterdir() if p.is_dir()] == [], "no folder made by a label name"


def test_file_safe_name():
    assert file_safe_name("aorta") == "aorta"
    assert file_safe_name("../../x") == "_._.._x"
    assert file_safe_name(".hidden") == "_hidden"
    assert file_safe_name("lung left/upper") == "lung_left_upper"
    assert file_safe_name("") == "_"


# ------------------------------------------------------------------ size limits
def nifti_header_bytes(shape, zooms=(1.0, 1.0, 1.0), dtype=np.int16) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_zooms(zooms)
    header.set_qform(np.diag([*zooms, 1.0]), code=1)
    header.set_sform(np.diag([*zooms, 1.0]), code=1)
    header["vox_offset"] = 352
    out = io.BytesIO()
    header.write_to(out)
    return out.getvalue() + b"\0" * (352 - len(out.getvalue()))


def write_bomb(path, side: int = 1200, chunk_mib: int = 64):
    """A real decompression bomb: a few MB of .nii.gz whose int16 zeros inflate to side³ voxels.

    Gzip members may be concatenated, so one compressed chunk of zeros is repeated."""
    total = side ** 3 * 2
    chunk = chunk_mib << 20
    zeros = gzip.compress(b"\0" * chunk, compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(nifti_header_bytes((side,) * 3)))
        for _ in range(total // chunk):
            f.write(zeros)
        f.write(gzip.compress(b"\0" * (total % chunk)))
    return path


def test_a_decompression_bomb_is_refused_on_its_header(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 5_000_000
    with pytest.raises(InputError, match=r"bomb\.nii\.gz: declares 1200x1200x1200 = 1,728,000,000 voxels, "
                                         r"more than the limit of 1,073,741,824 \(set AGG2EXP_MAX_INPUT_VOXELS"):
        load_nifti(bomb)


def test_the_resampled_size_is_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "coarse.nii.gz"
    path.write_bytes(gzip.compress(nifti_header_bytes((100, 100, 100), zooms=(6.0, 6.0, 6.0))))  # header only
    assert resampled_voxels((100, 100, 100), np.diag([6.0, 6.0, 6.0, 1.0]), (1.0, 1.0, 1.0)) == 600 ** 3
    assert resampled_voxels((100, 100, 100), np.diag([6.0, 6.0, 6.0, 1.0]), (0.9, 1.0, 1.0)) > DEFAULT_MAX_RESAMPLED_VOXELS
    with pytest.raises(InputError, match=r"coarse\.nii\.gz: 100x100x100 voxels become about 240,000,000 at the "
                                         r"model's 0\.9x1x1 mm spacing.*AGG2EXP_MAX_RESAMPLED_VOXELS"):
        load_nifti(path, target_spacing=(0.9, 1.0, 1.0))
    monkeypatch.setenv("AGG2EXP_MAX_RESAMPLED_VOXELS", "1e5")  # configurable
    monkeypatch.setenv("AGG2EXP_MAX_INPUT_VOXELS", "8000")
    hu = np.zeros((20, 20, 20), np.int16)
    write_nifti(tmp_path / "small.nii.gz", hu, np.diag([1.0, 1.0, 1.0, 1.0]))
    load_nifti(tmp_path / "small.nii.gz", target_spacing=(1.0, 1.0, 1.0))  # 8000 voxels: at the limit, read
    with pytest.raises(InputError, match="limit of 100,000"):
        load_nifti(tmp_path / "small.nii.gz", target_spacing=(0.4, 0.4, 0.4))
    monkeypatch.setenv("AGG2EXP_MAX_INPUT_VOXELS", "7999")
    with pytest.raises(InputError, match="limit of 7,999"):
        load_nifti(tmp_path / "small.nii.gz")
    monkeypatch.setenv("AGG2EXP_MAX_INPUT_VOXELS", "lots")
    with pytest.raises(InputError, match="AGG2EXP_MAX_INPUT_VOXELS: 'lots' is not a number of voxels"):
        load_nifti(tmp_path / "small.nii.gz")
    assert DEFAULT_MAX_INPUT_VOXELS == 1024 ** 3


def test_a_bomb_in_a_cohort_fails_its_case_and_the_others_go_on(tmp_path, capfd):
    manifest = make_cohort(tmp_path / "cohort", n=3)
    write_bomb(tmp_path / "cohort" / "c1_ct.nii.gz")
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    db = tmp_path / "s.duckdb"
    argv = ["precompute", "--manifest", manifest, "--model", checkpoint, "--db", db, "--device", "cpu"]
    rc, out, err = call_cli(argv, capfd)
    assert rc == 1 and "2 computed, 0 already done, 1 failed" in out, (out, err[-2000:])
    assert "failed c1 at load" in out + err and "1200x1200x1200" in out + err
    with duckdb.connect(str(db), read_only=True) as con:
        failures = con.execute("SELECT case_id, stage, message FROM failures").fetchall()
        done = {r[0] for r in con.execute("SELECT case_id FROM case_status").fetchall()}
    assert done == {"c0", "c2"}
    [(case_id, stage, message)] = failures
    assert (case_id, stage) == ("c1", "load") and "AGG2EXP_MAX_INPUT_VOXELS" in message
    rc, out, err = call_cli(argv, capfd)  # a rerun reaches the others (already done) and names the bomb again
    assert rc == 1 and "0 computed, 2 already done, 1 failed" in out


# ------------------------------------------------------------------ RoI and label names
def test_a_roi_named_like_a_class_is_one_line_at_the_start(world, tmp_path, capfd):
    cohort = world["manifest"].parent
    manifest = manifest_with(world, tmp_path / "m.csv", extra_header=",roi:organ_a",
                             extra_cell=f",{cohort / 'c0_seg.nii.gz'}")
    db = tmp_path / "store" / "s.duckdb"
    rc, out, err = call_cli(["precompute", "--manifest", manifest, "--model", world["checkpoint"], "--db", db,
                             "--device", "cpu"], capfd)
    assert_one_line(rc, err, "m.csv", "'roi:organ_a'", "class 'organ_a'")
    assert not db.parent.exists()


def test_duplicate_label_names_are_one_line_at_the_start(world, tmp_path, capfd):
    net = build_network(SMALL_UNET, len(LABELS))
    checkpoint = save_checkpoint(tmp_path / "dup.pt", net, SMALL_UNET, ["background", "organ_a", "organ_a"],
                                 Preprocessing(spacing=None), roi_size=SHAPE)
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    before = fingerprint(store_dir)
    rc, out, err = call_cli(["precompute", "--manifest", world["manifest"], "--model", checkpoint,
                             "--db", store_dir / "s.duckdb", "--device", "cpu"], capfd)
    assert_one_line(rc, err, "dup.pt", "duplicate label name 'organ_a'", "channels 1 and 2")
    assert fingerprint(store_dir) == before
