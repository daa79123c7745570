"""Slice artefact files on the dashboard (issue #21): a zero-byte or truncated ``.npz`` is
"artefact unreadable" and the page goes on; artefacts written outside the store's folder
(``--data-dir`` of the multi-node layout) are shown from the run's recorded root when the
operator allows it (``AGG2EXP_ARTIFACT_ROOTS``), and never from anywhere else."""
from __future__ import annotations

import os
import shutil

import duckdb
import pytest

from agg2exp_core.store.artifacts import record_artifact_root
from apptest import open_app, texts
from dashboard import data
from synthetic_store import build_synthetic_store


@pytest.fixture
def small_store(tmp_path):
    return build_synthetic_store(tmp_path / "site" / "store.duckdb", n_cases=4, seed=3, eval_methods=())


@pytest.mark.parametrize("damage", ["empty", "truncated", "not a zip"])
def test_an_unreadable_artefact_is_named_and_the_page_goes_on(monkeypatch, small_store, damage):
    case = small_store["case_ids"][0]
    run_id = small_store["run_ids"]["vg"]
    artefact = small_store["artifact_root"] / run_id / f"{case}.npz"
    content = artefact.read_bytes()
    artefact.write_bytes({"empty": b"", "truncated": content[: len(content) // 2],
                          "not a zip": b"PK\x03\x04 but nothing after"}[damage])
    app = open_app(monkeypatch, small_store["path"], "case_viewer", {"case": case, "target": "heart"})
    shown = texts(app, "warning") + texts(app, "info")
    assert any("unreadable" in w and f"{case}.npz" in w for w in shown), shown
    assert "Local matrix vs cohort mean" in texts(app, "subheader")


def test_artefacts_outside_the_store_folder_are_shown_only_from_an_allowed_recorded_root(
        monkeypatch, small_store, tmp_path):
    db, run_id = small_store["path"], small_store["run_ids"]["vg"]
    shared = tmp_path / "shared" / "artifacts"
    shutil.move(small_store["artifact_root"], shared)           # precompute --data-dir on shared storage
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE artifacts SET path = replace(path, 'artifacts/', ?)",
                    [os.path.relpath(shared, db.parent) + "/"])
        record_artifact_root(con, run_id, shared / run_id)
    ref = data.store_ref(db)
    relative = data.artifact_cases(ref, run_id)[small_store["case_ids"][0]]
    assert relative.startswith("..")
    monkeypatch.delenv("AGG2EXP_ARTIFACT_ROOTS", raising=False)
    assert data.resolve_artifact(ref, relative, run_id) is None, "not shown unless the operator allows it"
    monkeypatch.setenv("AGG2EXP_ARTIFACT_ROOTS", str(tmp_path / "shared"))
    found = data.resolve_artifact(ref, relative, run_id)
    assert found == (shared / run_id / f"{small_store['case_ids'][0]}.npz").resolve()
    secret = tmp_path / "shared" / "other-project.npz"          # allowed folder, but not this run's root
    secret.write_bytes(found.read_bytes())
    assert data.resolve_artifact(ref, os.path.relpath(secret, db.parent), run_id) is None
    app = open_app(monkeypatch, db, "case_viewer", {"case": small_store["case_ids"][0], "target": "heart"})
    assert not [w for w in texts(app, "warning") + texts(app, "info") if "unreadable" in w]
    assert not [i for i in texts(app, "info") if "No readable slice artefact" in i]
