"""Stores that carry SQL (issue #21): every connection is read-only where it reads, has no
external access and no extension loading, cannot be reconfigured, and a store defining
anything the schema does not is refused in one line naming the object, by the reader, the
writer, ``analyze`` and ``precompute``, before anything is read or written."""
from __future__ import annotations

import duckdb
import pytest

from agg2exp_core import store
from agg2exp_core.errors import InputError
from agg2exp_core.store import lockdown, queries
from cohorts import fingerprint, make_checkpoint, make_cohort
from synthetic_store import build_synthetic_store
from untrusted_stores import (EXTRA_VIEW, FOREIGN_OBJECTS, SECRET, SHADOWED_AVG, planted, reading_macro,
                              secrets_file)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    """A small store with a matrix run and evaluation runs (whose query calls ``lower()``)."""
    return build_synthetic_store(tmp_path_factory.mktemp("clean") / "clean.duckdb", n_cases=8, with_artifacts=False,
                                 eval_methods=("vg",))


def one_line_naming(err: BaseException, path, name: str) -> None:
    text = str(err)
    assert "\n" not in text and str(path) in text and name in text, text


def test_the_attack_is_real_with_duckdbs_defaults(clean, tmp_path):
    """What the dashboard did before: ATTACH with the defaults, and ``lower()`` returned the secrets."""
    secrets = secrets_file(tmp_path)
    path = planted(clean["path"], tmp_path / "s.duckdb", reading_macro(secrets))
    con = duckdb.connect(":memory:")
    con.execute("ATTACH ? AS store (READ_ONLY)", [str(path)])
    con.execute("USE store")
    assert SECRET in con.execute("SELECT lower('A')").fetchone()[0]


def test_a_macro_reading_a_file_is_refused_and_could_not_read_it_anyway(clean, tmp_path, monkeypatch):
    secrets = secrets_file(tmp_path)
    path = planted(clean["path"], tmp_path / "s.duckdb", reading_macro(secrets))
    with pytest.raises(InputError) as refused:
        store.open_reader(path)
    one_line_naming(refused.value, path, "macro lower")
    # defence in depth: with the check switched off, the lockdown alone keeps the file closed
    monkeypatch.setattr(lockdown, "refuse_foreign_objects", lambda *a, **k: None)
    with store.open_reader(path) as con:
        with pytest.raises(duckdb.PermissionException):
            queries.perturbation_summary(con, tuple(clean["eval_run_ids"].values()), queries.ALL_CASES)
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error):
            con.execute("INSERT INTO meta VALUES ('x', 'y')")          # read-only


@pytest.mark.parametrize("kind", list(FOREIGN_OBJECTS))
def test_every_object_beyond_the_schema_is_refused_by_name(clean, tmp_path, kind):
    statement, name = FOREIGN_OBJECTS[kind]
    path = planted(clean["path"], tmp_path / "s.duckdb", *statement.split("; "))
    with pytest.raises(InputError) as refused:
        store.open_reader(path)
    one_line_naming(refused.value, path, name)


def test_a_clean_store_defines_nothing_foreign_and_reads_the_same(clean):
    with store.open_reader(clean["path"]) as con:
        assert lockdown.foreign_objects(con) == []
        cases, targets, sources, cube = queries.local_matrices(con, clean["run_ids"]["vg"])
        assert cases == sorted(clean["case_ids"]) and cube.shape == (8, len(targets), len(sources))


def test_a_shadowed_avg_would_falsify_statistics(clean, tmp_path, monkeypatch):
    """Why macros are refused rather than merely locked down: the lock leaves a shadowed built-in in place."""
    path = planted(clean["path"], tmp_path / "s.duckdb", SHADOWED_AVG)
    monkeypatch.setattr(lockdown, "refuse_foreign_objects", lambda *a, **k: None)
    with store.open_reader(path) as con:
        matrix = queries.global_matrix(con, clean["run_ids"]["vg"])
    assert (matrix["mean"] == 0.99).all()


@pytest.mark.parametrize("statement,name", [(SHADOWED_AVG, "macro avg"), (EXTRA_VIEW, "view cohort_view")])
def test_the_writer_refuses_before_writing(clean, tmp_path, statement, name):
    path = planted(clean["path"], tmp_path / "s.duckdb", statement)
    before = fingerprint(tmp_path)
    with pytest.raises(InputError) as refused:
        with store.open_writer(path):
            pytest.fail("the writer opened a store that defines a macro")
    assert name in str(refused.value) and "\n" not in str(refused.value)
    assert fingerprint(tmp_path) == before, "nothing written, no writer's copy left"


def test_the_writer_has_no_external_access(clean, tmp_path):
    secrets = secrets_file(tmp_path)
    path = planted(clean["path"], tmp_path / "s.duckdb")
    with store.open_writer(path) as con:
        for statement in (f"SELECT content FROM read_text('{secrets}')", f"COPY cases TO '{tmp_path / 'out.csv'}'",
                          f"ATTACH '{tmp_path / 'other.duckdb'}' AS other", "SET enable_external_access = true",
                          "INSTALL httpfs"):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def call_cli(argv, capfd) -> tuple[int, str]:
    from agg2exp_core import cli
    capfd.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        rc = exit_.code
    return rc, capfd.readouterr().err


@pytest.mark.parametrize("statement,name", [(SHADOWED_AVG, "macro avg"), (EXTRA_VIEW, "view cohort_view")])
def test_analyze_refuses_in_one_line_and_writes_nothing(clean, tmp_path, capfd, statement, name):
    path = planted(clean["path"], tmp_path / "s.duckdb", statement)
    before = fingerprint(tmp_path)
    rc, err = call_cli(["analyze", "--db", path], capfd)
    assert rc == 2 and len(err.splitlines()) == 1 and name in err and str(path) in err, (rc, err)
    assert fingerprint(tmp_path) == before


def test_precompute_refuses_in_one_line_and_writes_nothing(clean, tmp_path, capfd):
    manifest = make_cohort(tmp_path / "cohort", n=2)
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    folder = tmp_path / "store"
    path = planted(clean["path"], folder / "s.duckdb", SHADOWED_AVG)
    before = fingerprint(folder)
    rc, err = call_cli(["precompute", "--manifest", manifest, "--checkpoint", checkpoint, "--db", path,
                        "--device", "cpu"], capfd)
    assert rc == 2 and len(err.splitlines()) == 1 and "macro avg" in err, (rc, err)
    assert fingerprint(folder) == before, "no store, artefact or writer's copy written"


def test_a_store_shadowing_the_catalog_the_check_reads_is_still_refused(clean, tmp_path):
    """A table macro named ``duckdb_functions`` would answer the check itself once the store is current."""
    hide = ("CREATE MACRO duckdb_functions() AS TABLE "
            "SELECT 'x' AS function_name, 'store' AS database_name, true AS internal")
    path = planted(clean["path"], tmp_path / "s.duckdb", hide, SHADOWED_AVG)
    with pytest.raises(InputError) as refused:
        store.open_reader(path)
    assert "macro" in str(refused.value) and "1 more" in str(refused.value)
