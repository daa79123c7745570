"""precompute writes every extra manifest column to case_field; a rerun replaces a case's fields;
a bad column is refused before anything is written."""
from __future__ import annotations

import duckdb
import numpy as np
import pytest

from agg2exp_core.pipeline.precompute import precompute
from agg2exp_core.store import queries
from cohorts import fingerprint, make_checkpoint, make_cohort, run_cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model") / "m.pt")


def with_columns(manifest, header: str, values: list[str]):
    """The manifest with extra columns (``values``: one CSV fragment per case)."""
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([f"{lines[0]},{header}"] + [f"{line},{v}" for line, v in zip(lines[1:], values)])
                        + "\n")
    return manifest


def stored(db):
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT case_id, name, kind, value, number, source FROM case_field ORDER BY ALL").fetchall()
        return rows, queries.case_fields(con), queries.field_catalog(con)


def test_manifest_columns_land_typed_and_a_rerun_replaces_them(tmp_path, checkpoint):
    manifest = with_columns(make_cohort(tmp_path / "cohort", n=3), "scanner,slice_thickness_mm,bmi",
                            ["A,1.25,20", "B,5,", "B,2.5,31"])
    db = tmp_path / "s.duckdb"
    precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    rows, wide, catalog = stored(db)
    assert ("c0", "slice_thickness_mm", "numeric", "1.25", 1.25, "manifest") in rows
    assert ("c1", "scanner", "categorical", "B", None, "manifest") in rows
    assert not any(r[0] == "c1" and r[1] == "bmi" for r in rows)       # blank: not recorded
    assert wide.scanner.tolist() == ["A", "B", "B"]
    np.testing.assert_array_equal(wide.bmi.to_numpy(), [20.0, np.nan, 31.0])
    assert dict(zip(catalog.name, catalog.kind)) == {"bmi": "numeric", "scanner": "categorical",
                                                     "slice_thickness_mm": "numeric"}

    # edited manifest: bmi dropped, a scanner renamed, thickness now holds a word -> categorical for every case
    manifest = make_cohort(tmp_path / "cohort", n=3)
    with_columns(manifest, "scanner,slice_thickness_mm", ["C,1.25", "B,thin", "B,2.5"])
    summary = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    assert len(summary.skipped) == 3                                    # results kept, metadata refreshed
    rows, wide, catalog = stored(db)
    assert {r[1] for r in rows} == {"scanner", "slice_thickness_mm"}
    assert wide.scanner.tolist() == ["C", "B", "B"]
    assert wide.slice_thickness_mm.tolist() == ["1.25", "thin", "2.5"]
    assert set(catalog.kind) == {"categorical"}


def test_a_bad_column_is_one_line_and_leaves_the_store_as_it_was(tmp_path, checkpoint):
    manifest = with_columns(make_cohort(tmp_path / "cohort", n=2), "site", ["north", "south"])
    db = tmp_path / "s.duckdb"
    precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False)
    before = fingerprint(tmp_path)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0] + ",scanner model"] + [line + ",X" for line in lines[1:]]) + "\n")
    before = {k: v for k, v in before.items() if not k.endswith("manifest.csv")}
    result = run_cli("precompute", "--manifest", manifest, "--model", checkpoint, "--db", db, "--device", "cpu")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and str(manifest) in message[0]
    assert "'scanner model' is not a plain field name" in message[0]
    after = {k: v for k, v in fingerprint(tmp_path).items() if not k.endswith("manifest.csv")}
    assert after == before


def test_evaluate_registers_the_fields_of_new_cases_only(tmp_path, checkpoint):
    from agg2exp_core.analysis import evaluation as ev
    from agg2exp_core.pipeline.evaluate import evaluate_cohort

    manifest = with_columns(make_cohort(tmp_path / "cohort", n=3), "site", ["north", "south", "east"])
    db = tmp_path / "s.duckdb"
    precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, case_ids=["c0"])
    manifest = make_cohort(tmp_path / "cohort", n=3)
    with_columns(manifest, "site", ["EDITED", "west", "east"])
    config = ev.EvaluationConfig(faithfulness=ev.FaithfulnessConfig(n_subsets=4),
                                 sensitivity=ev.SensitivityConfig(n=1), curves=ev.CurveConfig(steps=2))
    evaluate_cohort(manifest, checkpoint, db, methods=("vg",), classes=("organ_a",), config=config, max_cases=2,
                    progress=False)
    rows, _, _ = stored(db)
    assert {(r[0], r[3]) for r in rows} == {("c0", "north"), ("c1", "west")}   # c0 was known: left as it was
