"""A cohort with broken cases: each failure is recorded, the others go on, nothing partial
is stored; an empty class (missing from a label map, or never predicted) gives NULL
attribution rows, never an error."""
from __future__ import annotations

import gzip
import os
import shutil

import duckdb
import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis.outliers import AnalysisConfig, analyze
from agg2exp_core.pipeline.precompute import precompute
from cohorts import LABELS, make_checkpoint, make_cohort, make_volume, run_cli, write_nifti

N_CASES = 9
BROKEN = {  # case id -> (how it is broken, fragment of the recorded message)
    "c1": ("truncated CT .nii.gz", "cannot read NIfTI"),
    "c2": ("NaN voxels in the CT", "NaN/Inf voxels"),
    "c3": ("4-D CT", "expected a 3-D volume"),
    "c5": ("label shape differs from the CT", "does not match the image's"),
    "c6": ("label value outside the label set", "outside the label set 0..2"),
    "c8": ("label affine differs from the CT's", "affine does not match"),
}


def break_cases(cohort_dir):
    ct = lambda cid: cohort_dir / f"{cid}_ct.nii.gz"  # noqa: E731
    seg = lambda cid: cohort_dir / f"{cid}_seg.nii.gz"  # noqa: E731
    raw = gzip.decompress(ct("c1").read_bytes())
    ct("c1").write_bytes(gzip.compress(raw[: len(raw) // 3]))
    hu, _ = make_volume(2)
    nan = hu.astype(np.float32)
    nan[3, 4, 5] = np.nan
    write_nifti(ct("c2"), nan)
    write_nifti(ct("c3"), np.stack([hu, hu], axis=-1))
    write_nifti(seg("c5"), np.zeros((16, 16, 15), np.uint8))
    _, label = make_volume(6)
    label[0, 0, 0] = 9
    write_nifti(seg("c6"), label)
    _, label = make_volume(8)
    write_nifti(seg("c8"), label, affine=np.diag([1.0, 1.0, 1.2, 1.0]))


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    manifest = make_cohort(root / "cohort", n=N_CASES)
    break_cases(root / "cohort")
    checkpoint = make_checkpoint(root / "m.pt")
    db = root / "store" / "s.duckdb"
    result = run_cli("precompute", "--manifest", manifest, "--checkpoint", checkpoint, "--db", db,
                     "--device", "cpu")
    return root, manifest, checkpoint, db, result


@pytest.mark.slow
def test_failed_cases_are_recorded_and_the_others_go_on(broken_run):
    root, manifest, checkpoint, db, result = broken_run
    good = sorted(f"c{i}" for i in range(N_CASES) if f"c{i}" not in BROKEN)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{len(good)} computed, 0 already done, {len(BROKEN)} failed" in result.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
        failures = con.execute("SELECT case_id, stage, message FROM failures WHERE run_id = ? ORDER BY case_id",
                               [run_id]).fetchall()
        assert [f[0] for f in failures] == sorted(BROKEN)
        for case_id, stage, message in failures:
            assert stage == "load" and "\n" not in message
            assert BROKEN[case_id][1] in message and f"{case_id}_" in message, (case_id, message)
        # whole cases only: every good case has all its rows, a failed case has none anywhere
        per_case = dict(con.execute("SELECT case_id, count(*) FROM local_importance GROUP BY case_id").fetchall())
        assert per_case == {c: len(LABELS) ** 2 for c in good}
        for table in ("case_status", "artifacts", "cases"):
            ids = sorted(r[0] for r in con.execute(f"SELECT case_id FROM {table}").fetchall())
            assert ids == good, table
        dice_cases = {r[0] for r in con.execute("SELECT DISTINCT case_id FROM dice").fetchall()}
        assert dice_cases == set(good)
    artefacts = sorted(p.stem for p in (db.parent / "artifacts" / run_id).glob("*.npz"))
    assert artefacts == good
    assert not list(db.parent.rglob("*.tmp")), "no half-written artefact or snapshot left behind"


def test_rerun_after_a_fix_computes_only_the_fixed_case(broken_run, tmp_path):
    root, manifest, checkpoint, db, _ = broken_run
    work = tmp_path / "s.duckdb"
    work.write_bytes(db.read_bytes())
    hu, _ = make_volume(1)
    write_nifti(root / "cohort" / "c1_ct.nii.gz", hu)  # repair the truncated scan
    try:
        summary = precompute(manifest, checkpoint, work, "vg", device="cpu", progress=False)
    finally:
        break_cases(root / "cohort")
    assert summary.done == ["c1"] and len(summary.skipped) == N_CASES - len(BROKEN)
    assert sorted(summary.failed) == sorted(set(BROKEN) - {"c1"})
    with duckdb.connect(str(work), read_only=True) as con:
        failures = con.execute("SELECT case_id, count(*) FROM failures GROUP BY case_id ORDER BY 1").fetchall()
        assert failures == [(c, 1) for c in sorted(set(BROKEN) - {"c1"})], "only the latest attempt is kept"
        assert con.execute("SELECT count(*) FROM local_importance WHERE case_id = 'c1'").fetchone()[0] == 9


def test_empty_class_gives_null_rows_not_an_error(tmp_path):
    """Class 2 is never predicted by the network and is missing from two label maps."""
    manifest = make_cohort(tmp_path / "cohort", n=6, missing_b=("c0", "c3"))
    checkpoint = make_checkpoint(tmp_path / "m.pt", never_predict=2)
    db = tmp_path / "s.duckdb"
    summary = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    assert not summary.failed and len(summary.done) == 6
    with store.connect(db, read_only=True) as con:
        roi = dict(con.execute("SELECT name, roi_id FROM rois").fetchall())
        a, b = roi["organ_a"], roi["organ_b"]
        rows = con.execute("SELECT target_id, count(*), count(mass_abs), count(mass_pos), count(mass_neg) "
                           "FROM local_importance GROUP BY target_id ORDER BY 1").fetchall()
        assert len(rows) == 3 and all(r[1] == 6 * 3 for r in rows)
        by_target = {r[0]: r[2:] for r in rows}
        assert by_target[b] == (0, 0, 0), "a class never predicted has NULL masses"
        assert min(by_target[a]) > 0, "the other classes keep their numbers"
        # mass *in* the never-predicted region is a number (zero), not NULL
        in_b = con.execute("SELECT min(mass_abs), max(mass_abs) FROM local_importance "
                           "WHERE source_id = ? AND target_id <> ?", [b, b]).fetchone()
        assert in_b == (0.0, 0.0)
        dice_b = dict(con.execute("SELECT case_id, dice FROM dice WHERE class_id = ?", [b]).fetchall())
        assert "c0" not in dice_b and "c3" not in dice_b, "no Dice where the truth lacks the class"
        assert set(dice_b) == {"c1", "c2", "c4", "c5"} and all(v == 0.0 for v in dice_b.values())
        run_id = con.execute("SELECT run_id FROM runs").fetchone()[0]
        cases, targets, sources, cube = store.local_matrices(con, run_id)
    assert np.isnan(cube[:, targets.index(b)]).all() and not np.isnan(cube[:, targets.index(a)]).any()
    result = analyze(db, run_id, AnalysisConfig(fit_split="train"))
    assert result["n_cases"] == 6 and np.isfinite(result["anomaly"].score).all()


# ----------------------------------------------------------------------------- resumption keyed on the inputs
def test_changed_inputs_are_recomputed_and_identical_ones_are_not(tmp_path):
    """A case is done only for the files it was computed from: a changed scan, or a manifest
    naming other files under the same ids, is recomputed; a touched or copied identical file is not."""
    cohort = tmp_path / "cohort"
    manifest = make_cohort(cohort, n=4)
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    db = tmp_path / "s.duckdb"
    first = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    assert sorted(first.done) == ["c0", "c1", "c2", "c3"]
    with store.connect(db, read_only=True) as con:
        before = dict(con.execute("SELECT case_id, sum(mass_pos) FROM local_importance GROUP BY 1").fetchall())

    hu, _ = make_volume(777)  # c1: another scan under the same file name
    write_nifti(cohort / "c1_ct.nii.gz", hu)
    os.utime(cohort / "c2_seg.nii.gz")  # c2: touched, same bytes
    copy = cohort / "copy"  # c3: the same bytes at another path (in the cohort root), named by a second manifest
    copy.mkdir()
    shutil.copy(cohort / "c3_ct.nii.gz", copy / "c3_ct.nii.gz")
    text = manifest.read_text().replace("c3,c3_ct.nii.gz", f"c3,{copy / 'c3_ct.nii.gz'}")
    moved = cohort / "moved.csv"
    moved.write_text(text)
    second = precompute(moved, checkpoint, db, "vg", device="cpu", progress=False)
    assert second.done == ["c1"] and sorted(second.skipped) == ["c0", "c2", "c3"]
    assert second.recomputed == ["c1"]
    assert "1 recomputed (inputs changed)" in second.line()
    assert any("c1: image changed" in note for note in second.notes)

    # the recomputed rows are those of the new scan: equal to a fresh store's
    fresh = precompute(moved, checkpoint, tmp_path / "fresh.duckdb", "vg", device="cpu", progress=False,
                       case_ids=["c1"])
    with store.connect(db, read_only=True) as con, store.connect(tmp_path / "fresh.duckdb", read_only=True) as f:
        query = "SELECT target_id, source_id, mass_abs FROM local_importance WHERE case_id = 'c1' ORDER BY 1, 2"
        assert con.execute(query).fetchall() == f.execute(query).fetchall()
        after = dict(con.execute("SELECT case_id, sum(mass_pos) FROM local_importance GROUP BY 1").fetchall())
        assert con.execute("SELECT count(*) FROM local_importance WHERE case_id = 'c1'").fetchone()[0] == 9
    assert after["c1"] != before["c1"] and all(after[c] == before[c] for c in ("c0", "c2", "c3"))
    assert fresh.done == ["c1"]

    # a different manifest under the same ids, pointing at other scans: every case recomputed
    other = make_cohort(tmp_path / "other", n=4, seed=5)
    third = precompute(other, checkpoint, db, "vg", device="cpu", progress=False)
    assert sorted(third.recomputed) == ["c0", "c1", "c2", "c3"] and not third.skipped


def test_input_fingerprint_sees_content_not_time_or_place(tmp_path):
    from agg2exp_core.pipeline.inputs import changed_inputs, input_fingerprint

    image, label = tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz"
    image.write_bytes(b"scan-1"), label.write_bytes(b"label")
    row = {"case_id": "c0", "image": str(image), "label": str(label), "roi:effusion": ""}
    stamp = input_fingerprint(row)
    assert set(stamp) == {"image", "label"} and stamp["image"]["size"] == 6
    assert changed_inputs(stamp, row) == []
    os.utime(image, ns=(1, 1))  # touched: same bytes
    assert changed_inputs(stamp, row) == []
    elsewhere = tmp_path / "copy.nii.gz"
    shutil.copy(image, elsewhere)
    assert changed_inputs(stamp, {**row, "image": str(elsewhere)}) == []
    image.write_bytes(b"scan-2")  # same size, other bytes
    assert changed_inputs(stamp, row) == ["image"]
    assert changed_inputs(stamp, {**row, "image": str(elsewhere), "label": ""}) == ["label"]
    mask = tmp_path / "effusion.nii.gz"
    mask.write_bytes(b"mask")
    assert changed_inputs(stamp, {**row, "image": str(elsewhere), "roi:effusion": str(mask)}) == ["roi:effusion"]
    label.unlink()
    assert changed_inputs(stamp, {**row, "image": str(elsewhere)}) == ["label"]


# ----------------------------------------------------------------------------- a case that killed the process
DYING = r"""
import os, signal, sys
import agg2exp_core.pipeline.precompute as precompute
real_load = precompute.load_case

def load_case(row, *args, **kwargs):
    # what the kernel's OOM killer does to a process reading a decompression bomb
    if row["case_id"] == "c2":
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real_load(row, *args, **kwargs)

precompute.load_case = load_case
from agg2exp_core.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _dying_precompute(signal_name: str, manifest, checkpoint, db):
    import subprocess
    import sys

    from cohorts import REPO, cli_env

    args = ["--threads", "1", "precompute", "--manifest", manifest, "--checkpoint", checkpoint, "--db", db,
            "--device", "cpu"]
    return subprocess.run([sys.executable, "-c", DYING, signal_name, *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_a_case_that_killed_the_run_is_reported_and_held_back(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", n=4)
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    db = tmp_path / "s.duckdb"
    died = _dying_precompute("SIGKILL", manifest, checkpoint, db)
    assert died.returncode == -9, died.stderr[-2000:]

    rerun = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    assert rerun.done == ["c3"] and sorted(rerun.skipped) == ["c0", "c1"], "the case that killed the run waits"
    assert rerun.crashed == ["c2"]
    assert "1 held back (a previous run died computing them; --retry-crashed)" in rerun.line()
    assert any("holding back c2" in note for note in rerun.notes)
    again = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    assert again.crashed == ["c2"] and not again.done
    with store.connect(db, read_only=True) as con:
        failures = con.execute("SELECT case_id, stage, message FROM failures").fetchall()
        assert con.execute("SELECT count(*) FROM case_started").fetchone()[0] == 0
    assert len(failures) == 1, "recorded once, however often the rerun holds it back"
    case_id, stage, message = failures[0]
    assert (case_id, stage) == ("c2", "crashed") and "died before it was done" in message
    assert "--retry-crashed" in message

    asked = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, retry_crashed=True)
    assert asked.done == ["c2"] and not asked.crashed
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM failures").fetchone()[0] == 0
        assert con.execute("SELECT count(DISTINCT case_id) FROM local_importance").fetchone()[0] == 4


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_an_interrupted_case_is_not_mistaken_for_one_that_killed_the_run(tmp_path):
    """SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: the rerun just resumes."""
    manifest = make_cohort(tmp_path / "cohort", n=4)
    checkpoint = make_checkpoint(tmp_path / "m.pt")
    db = tmp_path / "s.duckdb"
    stopped = _dying_precompute("SIGTERM", manifest, checkpoint, db)
    assert stopped.returncode == 130 and "rerun to resume" in stopped.stderr, stopped.stderr[-2000:]
    rerun = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    assert sorted(rerun.done) == ["c2", "c3"] and not rerun.crashed and not rerun.failed
