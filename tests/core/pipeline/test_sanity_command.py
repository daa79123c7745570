"""``agg2exp sanity`` on a real (tiny) precompute run: rows stored per class and step, the store's reads,
bad input in one line with the store untouched."""
from __future__ import annotations

import pytest

from agg2exp_core import store
from agg2exp_core.cli import main
from agg2exp_core.pipeline.precompute import precompute
from agg2exp_core.store.queries import sanity_curves, sanity_rows, sanity_runs, sanity_verdicts
from tests.support.cohorts import make_checkpoint, make_cohort


@pytest.fixture(scope="module")
def vg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    manifest = make_cohort(root / "cohort", n=2)
    checkpoint = make_checkpoint(root / "tiny.pt")
    db = root / "store.duckdb"
    summary = precompute(manifest, checkpoint, db, "vg", {}, device="cpu", progress=False)
    return {"manifest": manifest, "checkpoint": checkpoint, "db": db, "run_id": summary.run_id, "root": root}


def _sanity(run, *extra):
    return main(["sanity", "--db", str(run["db"]), "--run", run["run_id"], "--manifest", str(run["manifest"]),
                 "--model", str(run["checkpoint"]), "--device", "cpu", *map(str, extra)])


def _rows(run):
    with store.connect(run["db"], read_only=True) as con:
        return sanity_rows(con, [run["run_id"]])


def test_sanity_stores_every_class_step_and_check(vg_run, capsys):
    assert _sanity(vg_run, "--steps", 1, "--cases", "c0,c1") == 0
    assert "classes pass the randomisation check" in capsys.readouterr().out
    rows = _rows(vg_run)
    with store.connect(vg_run["db"], read_only=True) as con:
        class_ids = store.class_roi_ids(con)
        assert sanity_runs(con) == [vg_run["run_id"]]
        curves = sanity_curves(con, "spearman_abs")
        verdicts = sanity_verdicts(con, "spearman_abs")
    assert set(rows.class_id) == set(class_ids) and set(rows.case_id) == {"c0", "c1"}
    mprt = rows[rows.check == "mprt"]
    last = int(mprt.step.max())
    assert sorted(mprt.step.unique()) == [0, 1, last] and last == 5  # the tiny UNet's five layers
    assert set(rows.check) == {"mprt", "random_logit", "edge"} and set(rows.method) == {"vg"}
    # one row per case, class and metric at each step
    assert len(mprt) == 2 * len(class_ids) * 3 * 4
    assert list(curves.step) == [0, 1, last] and curves.depth.iloc[-1] == 1.0
    assert curves["mean"].iloc[0] == pytest.approx(1.0) and (curves.n == 2 * len(class_ids)).all()
    final = mprt[(mprt.step == last) & (mprt.metric == "spearman_abs")]
    verdict = verdicts[verdicts.check == "mprt"].set_index("class_id")
    for class_id, group in final.groupby("class_id"):
        assert verdict.loc[class_id, "passed"] == group.passed.all()
        assert verdict.loc[class_id, "n_cases"] == 2


def test_another_model_is_refused_and_nothing_is_written(vg_run, capsys):
    before = _rows(vg_run)
    other = make_checkpoint(vg_run["root"] / "other.pt", seed=1)
    code = main(["sanity", "--db", str(vg_run["db"]), "--run", vg_run["run_id"], "--manifest",
                 str(vg_run["manifest"]), "--model", str(other), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--model" in err and "is not the model of run" in err and "\n" not in err
    assert _rows(vg_run).equals(before)


@pytest.mark.parametrize("args, where", [(("--run", "nope"), "--run"), (("--cases", "c0,zz"), "--cases"),
                                         (("--classes", "7"), "--classes"), (("--steps", "-1"), "--steps")])
def test_bad_options_in_one_line(vg_run, capsys, args, where):
    before = _rows(vg_run)
    argv = ["sanity", "--db", str(vg_run["db"]), "--run", vg_run["run_id"], "--manifest", str(vg_run["manifest"]),
            "--model", str(vg_run["checkpoint"]), "--device", "cpu", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert where in err and "\n" not in err
    assert _rows(vg_run).equals(before)


def test_a_broken_scan_leaves_the_stored_checks(vg_run, capsys, tmp_path):
    before = _rows(vg_run)
    manifest = tmp_path / "manifest.csv"
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    lines = vg_run["manifest"].read_text().splitlines()
    cohort = vg_run["manifest"].parent
    manifest.write_text("\n".join([lines[0], lines[1].replace("c0_", f"{cohort}/c0_"),
                                   lines[2].replace("c1_ct.nii.gz", str(broken)).replace("c1_seg", f"{cohort}/c1_seg")])
                        + "\n")
    code = main(["sanity", "--db", str(vg_run["db"]), "--run", vg_run["run_id"], "--manifest", str(manifest),
                 "--model", str(vg_run["checkpoint"]), "--device", "cpu", "--cases", "c0,c1", "--allow-outside-root"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "broken.nii.gz" in err and "\n" not in err
    assert _rows(vg_run).equals(before)
