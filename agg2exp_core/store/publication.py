"""The files behind a store: one writer at a time, its private copy, durable publication.

``<db>.lock``: an exclusive ``flock`` held by the one writer (the kernel releases it when
the process dies). ``<db>.writing``: the writer's DuckDB file. ``<db>.writing.seed``: the
identity (inode, size, mtime, ctime) of the published file that the writer's file was
copied from or last published as, so a published store replaced behind the writer's back
is noticed. Copies go to a new ``.<name>.<pid>.<random>.tmp``, are fsynced, then renamed
into place. None of these is opened through a symbolic link (``io.safe_files``).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agg2exp_core.errors import InputError
from agg2exp_core.io.safe_files import open_lock, refuse_link, sync_folder, temporary_beside

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.\d+(\.\w+)?\.tmp$")


def writing_path(db_path: str | Path) -> Path:
    """The writer's private file for a published store path."""
    return Path(str(db_path) + ".writing")


def _lock_path(db_path: Path) -> Path:
    return Path(str(db_path) + ".lock")


def _seed_path(db_path: Path) -> Path:
    """Which published file the writer's file was copied from (or last published as)."""
    return Path(str(writing_path(db_path)) + ".seed")


@contextmanager
def exclusive_lock(db_path: Path) -> Iterator[None]:
    """Hold ``<db>.lock`` (flock, released by the kernel if the process dies); removed on release."""
    path = _lock_path(db_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:  # the holder removes the file on release: lock the file that is at the path
            fd = open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise InputError(db_path, f"another writer (pid {holder}) is updating this store; "
                                          "wait until it has finished") from None
            if _same_file(fd, path):
                break
            os.close(fd)
    except OSError as err:
        raise InputError(db_path, f"cannot open the store ({err.strerror or err})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


def remove_leftover_temporaries(db_path: Path) -> None:
    """Remove ``.<name>.<pid>[.<random>].tmp`` copies a killed writer left (we hold the lock: none is in use)."""
    names = {db_path.name, writing_path(db_path).name, _seed_path(db_path).name}
    for path in db_path.parent.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match and match["name"] in names:
            path.unlink(missing_ok=True)


def refuse_linked_work_files(db_path: Path) -> None:
    """The writer's files are ours: one that is a symbolic link was put there by someone else."""
    work = writing_path(db_path)
    for path, what in ((work, "the writer's file"), (Path(str(work) + ".wal"), "the writer's log"),
                       (_seed_path(db_path), "the writer's seed record")):
        refuse_link(path, what)


def remove_work_files(db_path: Path) -> None:
    work = writing_path(db_path)
    for path in (work, Path(str(work) + ".wal"), _seed_path(db_path)):
        path.unlink(missing_ok=True)


def _identity(path: Path) -> dict | None:
    """What changes whenever a file is replaced or rewritten (ctime cannot be set back)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def record_seed(db_path: Path) -> None:
    """Record the published file's identity; if that fails, no record: the next writer reseeds (safe)."""
    record = _seed_path(db_path)
    tmp = None
    try:
        fd, tmp = temporary_beside(record)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"published": _identity(db_path)}))
        os.replace(tmp, record)
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        record.unlink(missing_ok=True)


def seed_matches(db_path: Path) -> bool:
    """Whether the published file is still the one the writer's file was seeded from."""
    try:
        recorded = json.loads(_seed_path(db_path).read_text())["published"]
    except (OSError, ValueError, KeyError, TypeError):  # no record (an older writer's file)
        return not db_path.exists()  # trust it only where no published store could be newer
    return recorded == _identity(db_path)


def durable_copy(source: Path, target: Path, problem: str) -> None:
    """Copy to ``.<target>.<pid>.tmp``, fsync, rename over ``target``, fsync the folder.

    Any failure (disk full, read error) removes the temporary file and leaves ``target``
    as it was; it is reported as an ``InputError`` naming ``target``, its ``problem`` with
    ``{error}`` replaced by the system's reason.
    """
    tmp = None
    try:
        fd, tmp = temporary_beside(target)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise InputError(target, problem.format(error=err.strerror or err)) from None
    sync_folder(target.parent)  # the rename itself is durable once the folder is synced
