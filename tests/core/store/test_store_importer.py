"""Store transactions and publication, and the import of the paper's published TSV2 results."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.analysis.outliers import AnalysisConfig, analyze
from agg2exp_core.errors import InputError
from agg2exp_core.pipeline.importer import import_agg2exp_csv
from agg2exp_core.labels import THORAX_LABELS

PUBLISHED = Path(__file__).resolve().parents[3] / "data" / "agg2exp-tsv2" / "tsv2_test_aggregated_sg_explanations_with_dice.csv"


@pytest.fixture(scope="module")
def tsv2_store(tmp_path_factory):
    db = tmp_path_factory.mktemp("tsv2") / "tsv2.duckdb"
    run_id = import_agg2exp_csv(PUBLISHED, db)
    return db, run_id


def test_import_global_matrix_equals_csv_column_means(tsv2_store):
    db, run_id = tsv2_store
    csv = pd.read_csv(PUBLISHED)
    with store.connect(db, read_only=True) as con:
        cases, targets, sources, cube = store.local_matrices(con, run_id)
        names = dict(con.execute("SELECT roi_id, name FROM rois").fetchall())
        n_dice = con.execute("SELECT count(*) FROM dice").fetchone()[0]
        dataset = con.execute("SELECT DISTINCT dataset FROM cases").fetchall()
    assert len(cases) == 32 and len(targets) == 17 and dataset == [("tsv2",)]
    assert [names[t] for t in targets] == list(THORAX_LABELS)  # 'vertebraes' mapped to 'vertebrae'
    spelled = ["vertebraes" if n == "vertebrae" else n for n in THORAX_LABELS]
    expected = np.array([[csv[f"{a}_explanation_in_{b}_mass"].mean() for b in spelled] for a in spelled])
    np.testing.assert_allclose(np.nanmean(cube, axis=0), expected, atol=1e-12)
    assert n_dice > 0


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_import_is_idempotent_and_joins_metadata(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,sex,age\ns0029,F,61\n")
    db = tmp_path / "s.duckdb"
    import_agg2exp_csv(PUBLISHED, db, metadata=meta, data_dir=tmp_path / "copy")
    import_agg2exp_csv(PUBLISHED, db, metadata=meta)
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM local_importance").fetchone()[0] == 32 * 17 * 17
        assert con.execute("SELECT sex, age FROM cases WHERE case_id = 's0029'").fetchone() == ("F", 61.0)
    assert (tmp_path / "copy" / "agg2exp-tsv2" / "LICENSE").exists()


def test_bad_csv_is_rejected_and_store_left_untouched(tmp_path, tsv2_store):
    csv = pd.read_csv(PUBLISHED)
    csv.loc[3, "aorta_explanation_in_heart_mass"] += 0.2
    bad = tmp_path / "bad.csv"
    csv.to_csv(bad, index=False)
    db = tmp_path / "s.duckdb"
    import_agg2exp_csv(PUBLISHED, db)
    before = db.read_bytes()
    with pytest.raises(InputError, match=r"masses of class 'aorta' sum to 1\.2"):
        import_agg2exp_csv(bad, db)
    assert db.read_bytes() == before
    (tmp_path / "nomass.csv").write_text("patient,x\n1,2\n")
    with pytest.raises(InputError, match="not an Agg2Exp aggregate CSV"):
        import_agg2exp_csv(tmp_path / "nomass.csv", db)


def test_write_case_is_all_or_nothing(tmp_path):
    db = tmp_path / "s.duckdb"
    with store.open_writer(db) as con:
        store.ensure_run(con, "r1", "vg", {}, "sha", ["bg"], source="test")
        rows = [["r1", "c1", 0, 0, 1.0, 1.0, None]]
        store.write_case(con, "r1", "c1", rows, case_row={"case_id": "c1", "dataset": "d"})
        with pytest.raises(Exception):
            store.write_case(con, "r1", "c2", rows + [["r1", "c2", 0, 0, "x", 1, 1]], case_row={"case_id": "c2", "dataset": "d"})
        assert store.done_cases(con, "r1") == {"c1"}
        assert con.execute("SELECT count(*) FROM local_importance WHERE case_id = 'c2'").fetchone()[0] == 0
    assert not list(tmp_path.glob(".*.tmp")), "publication leaves no temporary file"
    with store.connect(db, read_only=True) as reader:
        assert reader.execute("SELECT count(*) FROM case_status").fetchone()[0] == 1


def test_published_snapshot_stays_readable_while_writer_continues(tmp_path):
    db = tmp_path / "s.duckdb"
    with store.open_writer(db) as con:
        store.ensure_run(con, "r1", "vg", {}, "sha", ["bg"], source="test")
    reader = store.connect(db, read_only=True)
    with store.open_writer(db) as con:
        store.ensure_run(con, "r2", "vg", {}, "sha", ["bg"], source="test")
        store.publish(con, db)
        assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # old snapshot, still valid
    # A new reader in another process (as the dashboard is) sees the new snapshot.
    # (Within one process DuckDB reuses an open database instance for the same path.)
    count = subprocess.run([sys.executable, "-c", "import duckdb, sys; print(duckdb.connect(sys.argv[1], "
                            "read_only=True).execute('SELECT count(*) FROM runs').fetchone()[0])", str(db)],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert count == "2"
    reader.close()


def test_analyze_imported_cohort_falls_back_to_fitting_on_all(tsv2_store):
    db, run_id = tsv2_store
    result = analyze(db, run_id, AnalysisConfig())
    assert result["fit_fallback"] and result["n_cases"] == 32
    anomaly = result["anomaly"]
    assert len(anomaly) == 32 * 18  # 17 classes + the average
    assert set(result["spearman"].target_id) >= {store.AVERAGE_TARGET}
