"""Cases whose files hang a run or are read out of order (issue 21).

- A case that hangs (a read blocked on a FIFO, as on a stale network mount) is ended at
  ``case_timeout``, recorded as failed with stage ``timeout``, held back on the rerun like a
  crashed case, and the run goes on: in process (SIGALRM) and on worker processes.
- A FIFO swapped in for a scan after the manifest was checked fails its case at once.
- A case's headers are compared before any voxel is read; its inputs are hashed before the
  read and confirmed unchanged after it; a detached header's data file is part of its hash.
"""
from __future__ import annotations

import os
import time

import duckdb
import nibabel as nib
import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io import images
from agg2exp_core.pipeline import precompute as precompute_module
from agg2exp_core.pipeline.executors import InProcessExecutor, ModelSource, ProcessExecutor
from agg2exp_core.pipeline.precompute import precompute
from cohorts import make_checkpoint, make_cohort, make_volume, write_nifti
from hanging import open_fifo_forever

TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model") / "m.pt")


def failures(db) -> dict[str, tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {c: (s, m) for c, s, m in con.execute("SELECT case_id, stage, message FROM failures").fetchall()}


def test_a_hanging_case_is_ended_recorded_held_back_and_retried(tmp_path, checkpoint, monkeypatch):
    manifest = make_cohort(tmp_path / "cohort", n=3)
    fifo = tmp_path / "stale-mount"
    os.mkfifo(fifo)
    real_load = precompute_module.load_case

    def load_or_hang(row, *args, **kwargs):  # c1's read blocks in the kernel, like a stale mount
        if row["case_id"] == "c1":
            open_fifo_forever(str(fifo))
        return real_load(row, *args, **kwargs)

    monkeypatch.setattr(precompute_module, "load_case", load_or_hang)
    db = tmp_path / "s.duckdb"
    started = time.monotonic()
    first = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, case_timeout=TIMEOUT_S)
    assert time.monotonic() - started < 60
    assert sorted(first.done) == ["c0", "c2"] and first.failed == ["c1"]
    stage, message = failures(db)["c1"]
    assert stage == "timeout" and f"ended after {TIMEOUT_S:g} s" in message and "--case-timeout" in message

    second = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, case_timeout=TIMEOUT_S)
    assert second.crashed == ["c1"] and second.timed_out == ["c1"] and not second.done
    assert "1 held back (a previous run died or ran out of time computing them; --retry-crashed)" in second.line()
    assert any("holding back c1: a previous run ran out of time" in note for note in second.notes)

    monkeypatch.setattr(precompute_module, "load_case", real_load)  # the mount is back
    third = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, retry_crashed=True)
    assert third.done == ["c1"] and failures(db) == {}


@pytest.mark.slow   # > 15 s on 2 cores (make test-fast leaves it out)
def test_worker_processes_end_a_hanging_case_and_finish_the_others(tmp_path, checkpoint):
    from hanging import compute_or_hang

    fifo = tmp_path / "stale-mount"
    os.mkfifo(fifo)
    jobs = [(name, str(fifo)) for name in ("a", "hang", "b", "c", "d")]
    started = time.monotonic()
    with ProcessExecutor(workers=1) as executor:
        outcomes = {o.job[0]: o for o in executor.map(compute_or_hang, ModelSource(checkpoint, "cpu"), jobs,
                                                      timeout_s=10.0)}
    assert time.monotonic() - started < 120
    assert outcomes["hang"].timed_out.startswith("ended after 10 s") and outcomes["hang"].result is None
    assert {name: o.result.split(" by ")[0] for name, o in outcomes.items() if name != "hang"} == \
        {"a": "a", "b": "b", "c": "c", "d": "d"}
    assert not any(o.crashed or o.error for o in outcomes.values())


def test_the_in_process_limit_leaves_no_alarm_behind(checkpoint):
    from hanging import compute_or_hang

    outcomes = list(InProcessExecutor().map(compute_or_hang, ModelSource(checkpoint, "cpu"), [("a", "")],
                                            timeout_s=0.5))
    assert outcomes[0].result.startswith("a by ")
    time.sleep(0.8)  # a timer left armed would raise here


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
@pytest.mark.parametrize("executor", ["inprocess", "processes"])
def test_a_fifo_swapped_in_after_the_manifest_check_fails_its_case_at_once(tmp_path, checkpoint, monkeypatch,
                                                                           executor):
    manifest = make_cohort(tmp_path / "cohort", n=3)
    real_read = precompute_module.read_manifest

    def read_then_swap(*args, **kwargs):  # the manifest was checked; then c1's scan becomes a FIFO
        frame = real_read(*args, **kwargs)
        os.unlink(frame.image.iloc[1])
        os.mkfifo(frame.image.iloc[1])
        return frame

    monkeypatch.setattr(precompute_module, "read_manifest", read_then_swap)
    db = tmp_path / "s.duckdb"
    runner = InProcessExecutor() if executor == "inprocess" else ProcessExecutor(workers=2)
    started = time.monotonic()
    summary = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, executor=runner,
                         case_timeout=300)
    assert time.monotonic() - started < 120, "no read blocked until the time limit"
    assert sorted(summary.done) == ["c0", "c2"] and summary.failed == ["c1"]
    stage, message = failures(db)["c1"]
    assert stage == "load" and message.endswith("c1_ct.nii.gz: not a regular file (a FIFO); not read")


def test_a_mismatched_label_is_refused_on_its_header_before_any_voxel_is_read(tmp_path, monkeypatch):
    hu, label = make_volume(0)
    image = write_nifti(tmp_path / "ct.nii.gz", hu)
    small = write_nifti(tmp_path / "seg.nii.gz", label[:8])
    read = []
    real = images.load_volume
    monkeypatch.setattr(images, "load_volume", lambda path, *a, **k: read.append(path) or real(path, *a, **k))
    with pytest.raises(InputError, match=r"seg.nii.gz: shape \(8, 16, 16\) does not match the image's \(16, 16, 16\)"):
        images.load_case({"case_id": "c0", "image": str(image), "label": str(small)})
    assert read == [], "no scan was read"
    moved = write_nifti(tmp_path / "roi.nii.gz", label, np.diag([1.0, 1.0, 1.0, 1.0]) + np.eye(4, k=3) * 0.0
                        + np.array([[0, 0, 0, 5.0], [0] * 4, [0] * 4, [0] * 4]))
    with pytest.raises(InputError, match="roi.nii.gz: affine does not match the image's affine"):
        images.load_case({"case_id": "c0", "image": str(image), "roi:x": str(moved)})
    assert read == []


def test_a_small_header_on_a_huge_file_is_refused_before_it_is_hashed_or_read(tmp_path):
    hu, _ = make_volume(0)
    path = write_nifti(tmp_path / "ct.nii", hu)
    with open(path, "ab") as f:
        f.write(bytes(3 << 20))  # 3 MiB behind 8 KiB of voxels
    with pytest.raises(InputError, match="ct.nii: holds 3,154,.* bytes, far more than the 8,192 bytes"):
        images.load_volume(path)


def test_a_scan_swapped_between_hash_and_read_fails_its_case(tmp_path, checkpoint, monkeypatch):
    manifest = make_cohort(tmp_path / "cohort", n=2)
    real = precompute_module.input_fingerprint

    def hash_then_swap(row):  # another scan takes the file's place after it was hashed
        stamp = real(row)
        if row["case_id"] == "c1":
            replacement = tmp_path / "other.nii.gz"
            write_nifti(replacement, make_volume(99)[0])
            os.replace(replacement, row["image"])
        return stamp

    monkeypatch.setattr(precompute_module, "input_fingerprint", hash_then_swap)
    db = tmp_path / "s.duckdb"
    summary = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    assert summary.done == ["c0"] and summary.failed == ["c1"]
    stage, message = failures(db)["c1"]
    assert stage == "load" and "c1_ct.nii.gz: changed while the case was being read" in message


def test_a_detached_header_is_fingerprinted_with_its_data_file(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from agg2exp_core.pipeline.inputs import changed_inputs, input_fingerprint

    header = tmp_path / "ct.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.int16)), str(header))
    row = {"case_id": "c0", "image": str(header)}
    stamp = input_fingerprint(row)
    raw = tmp_path / "ct.raw"
    time.sleep(0.01)
    raw.write_bytes(np.ones(64, np.int16).tobytes())  # other voxels, same header, same size
    assert changed_inputs(stamp, row) == ["image"]
    assert stamp["image"]["size"] == header.stat().st_size + 128


def test_a_done_case_whose_files_turned_hostile_is_recomputed_not_fatal(tmp_path):
    """On a rerun, a header now naming /etc/passwd or a scan now a FIFO marks the case changed
    (it then fails at load on its own) instead of ending the whole run in the planning step."""
    sitk = pytest.importorskip("SimpleITK")
    from agg2exp_core.pipeline.inputs import changed_inputs, input_fingerprint

    header = tmp_path / "ct.mhd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.int16)), str(header))
    nifti = write_nifti(tmp_path / "seg.nii.gz", np.zeros((4, 4, 4), np.int16))
    row = {"case_id": "c0", "image": str(header), "label": str(nifti)}
    stamp = input_fingerprint(row)
    header.write_text(header.read_text().replace("ElementDataFile = ct.raw", "ElementDataFile = /etc/passwd"))
    nifti.unlink()
    os.mkfifo(nifti)
    assert changed_inputs(stamp, row) == ["image", "label"]


def test_a_zero_voxel_size_fails_its_case_not_the_run(tmp_path, checkpoint):
    manifest = make_cohort(tmp_path / "cohort", n=2)
    img = nib.load(str(tmp_path / "cohort" / "c1_ct.nii.gz"))
    broken = nib.Nifti1Image(np.asarray(img.dataobj), np.eye(4))
    broken.header["pixdim"][1:4] = 0
    broken.set_sform(None, code=0)
    nib.save(broken, str(tmp_path / "cohort" / "c1_ct.nii.gz"))
    summary = precompute(manifest, checkpoint, tmp_path / "s.duckdb", "vg", device="cpu", progress=False)
    assert summary.done == ["c0"] and "pixdim" in failures(tmp_path / "s.duckdb")["c1"][1]
