"""analyze's quality options: bad values are one line naming the option and leave the store as it was;
the threshold reaches the stored flags."""
from __future__ import annotations

import shutil

import duckdb
import pytest

from agg2exp_core import cli


def run(argv, capfd) -> tuple[int, str]:
    capfd.readouterr()
    rc = cli.main([str(a) for a in argv])
    return rc, capfd.readouterr().err


@pytest.mark.parametrize("option,value", [("--failure-below", "1.5"), ("--failure-below", "0"),
                                          ("--quality-features", "everything")])
def test_bad_quality_options_are_one_line_and_write_nothing(synthetic_store, capfd, option, value):
    path = synthetic_store["path"]
    before = path.read_bytes()
    rc, err = run(["analyze", "--db", path, option, value], capfd)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and option in err
    assert path.read_bytes() == before


@pytest.mark.slow   # > 15 s on 2 cores: the outliers and the quality analysis with its ablation
def test_failure_below_sets_the_stored_threshold_and_flags(synthetic_store, capfd, tmp_path):
    path = tmp_path / "store.duckdb"
    shutil.copyfile(synthetic_store["path"], path)
    shutil.copytree(synthetic_store["artifact_root"], tmp_path / "artifacts")     # predicted volumes
    run_id = synthetic_store["run_ids"]["vg"]
    rc, err = run(["analyze", "--db", path, "--run", run_id, "--failure-below", "0.9", "--quality-features",
                   "explanation", "--no-reasons", "--no-agreement", "--bootstrap", "0",
                   "--quality-reference", "reference"], capfd)
    assert rc == 0, err
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT estimate, failure_below, likely_failure FROM dice_estimate WHERE run_id = ?",
                           [run_id]).df()
        sets = {r[0] for r in con.execute("SELECT DISTINCT feature_set FROM quality_ablation WHERE run_id = ?",
                                          [run_id]).fetchall()}
    assert (rows.failure_below == 0.9).all() and (rows.likely_failure == (rows.estimate < 0.9)).all()
    assert rows.likely_failure.any() and {"explanation", "volume", "constant"} <= sets
