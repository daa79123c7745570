"""The tool's own files in a folder others can write to (issue #21): a lock, work file or
temporary name replaced by a symbolic (or hard) link must not make the tool write through
it. Each attack leaves the target byte for byte as it was and gives one line (or, for the
temporaries, is not followed at all: their names are new files, ``O_EXCL``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.errors import InputError
from agg2exp_core.pipeline.background import build_lock
from agg2exp_core.store.artifacts import read_artifact, write_artifact

SECRET = b"precious = 1\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def refused(action, victim: Path, *words: str) -> str:
    with pytest.raises(InputError) as err:
        action()
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert victim.read_bytes() == SECRET, "the link's target was written"
    return message


def write_session(db: Path) -> None:
    with store.open_writer(db) as con:
        con.execute("INSERT INTO meta VALUES ('k', 'v')")


def test_a_symlinked_store_lock_is_refused_and_its_target_untouched(tmp_path, victim):
    db = tmp_path / "study.duckdb"
    os.symlink(victim, str(db) + ".lock")
    refused(lambda: write_session(db), victim, "study.duckdb.lock", "symbolic link")
    assert not db.exists()


def test_a_hard_linked_store_lock_is_refused(tmp_path, victim):
    db = tmp_path / "study.duckdb"
    os.link(victim, str(db) + ".lock")
    refused(lambda: write_session(db), victim, "study.duckdb.lock", "hard link")


@pytest.mark.parametrize("suffix", [".writing", ".writing.wal", ".writing.seed"])
def test_symlinked_writer_files_are_refused(tmp_path, victim, suffix):
    db = tmp_path / "study.duckdb"
    write_session(db)
    published = db.read_bytes()
    Path(str(db) + suffix).unlink(missing_ok=True)  # the writer's own file, kept between sessions
    os.symlink(victim, str(db) + suffix)
    refused(lambda: write_session(db), victim, f"study.duckdb{suffix}", "symbolic link")
    assert db.read_bytes() == published


def test_temporaries_planted_during_a_session_are_not_written_through(tmp_path, victim):
    """An attacker who watches the folder plants links at the temporary names a writer would use."""
    db = tmp_path / "study.duckdb"
    with store.open_writer(db) as con:
        con.execute("INSERT INTO meta VALUES ('k', 'v')")
        for name in (db.name, db.name + ".writing.seed"):
            os.symlink(victim, tmp_path / f".{name}.{os.getpid()}.tmp")
    assert victim.read_bytes() == SECRET
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'k'").fetchone() == ("v",)


def test_an_artefact_temporary_planted_beforehand_is_not_written_through(tmp_path, victim):
    path = tmp_path / "artifacts" / "run" / "case1.npz"
    path.parent.mkdir(parents=True)
    os.symlink(victim, path.parent / f".{path.name}.{os.getpid()}.tmp")
    arrays = {"ct": np.zeros((3, 4, 5), np.int16), "pred": np.zeros((3, 4, 5), np.uint8)}
    write_artifact(arrays, path)
    assert victim.read_bytes() == SECRET
    assert read_artifact(path)["ct"].shape == (3, 4, 5)
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()] == []


def test_a_symlinked_demo_build_lock_is_refused(tmp_path, victim):
    os.symlink(victim, tmp_path / "demo.build.lock")

    def take():
        with build_lock(tmp_path):
            pass

    refused(take, victim, "demo.build.lock", "symbolic link")


def test_published_files_keep_the_modes_a_group_private_folder_needs(tmp_path):
    """mkstemp makes 0600 files: the published store and artefacts must read like any new file
    under the writer's umask (007 in a group-private folder: rw for the group, nothing for others)."""
    import stat
    import subprocess
    import sys

    code = ("import os, sys, numpy as np; os.umask(0o007)\n"
            "from pathlib import Path\nfrom agg2exp_core import store\n"
            "from agg2exp_core.store.artifacts import write_artifact\n"
            "with store.open_writer(sys.argv[1]) as con: con.execute(\"INSERT INTO meta VALUES ('k', 'v')\")\n"
            "write_artifact({'ct': np.zeros((2, 2, 2), np.int16)}, Path(sys.argv[2]))\n")
    db, artefact = tmp_path / "s.duckdb", tmp_path / "artifacts" / "c.npz"
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", code, str(db), str(artefact)], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert stat.S_IMODE(db.stat().st_mode) == 0o660 and stat.S_IMODE(artefact.stat().st_mode) == 0o660
