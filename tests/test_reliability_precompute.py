"""A cohort with broken cases: each failure is recorded, the others go on, nothing partial
is stored; an empty class (missing from a label map, or never predicted) gives NULL
attribution rows, never an error."""
from __future__ import annotations

import gzip

import duckdb
import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis.outliers import AnalysisConfig, analyze
from agg2exp_core.pipeline.precompute import precompute
from test_reliability_helpers import LABELS, make_checkpoint, make_cohort, make_volume, run_cli, write_nifti

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
