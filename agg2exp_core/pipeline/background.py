"""The demo build behind ``make run``: one build of a data folder at a time, run detached.

``make run`` starts the dashboard at once and the demo build beside it (``agg2exp demo
--background``): a process of its own session, so stopping the dashboard (Ctrl-C) does not
stop the build, which publishes each result as it completes and ends by itself; its output
goes to ``<data>/demo-build.log``. ``build_lock`` keeps a second build of the same folder
out (the kernel releases the lock of a process that dies), and tells who holds it.
Light on purpose (standard library and the store): ``--background`` answers in a moment.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agg2exp_core import store
from agg2exp_core.errors import InputError
from agg2exp_core.io.safe_files import NEW_FILE_MODE, open_lock

LOG_NAME = "demo-build.log"
LOCK_NAME = "demo.build.lock"


def demo_db(data_dir: str | Path) -> Path:
    return Path(data_dir) / "demo.duckdb"


def demo_complete(data_dir: str | Path) -> bool:
    """Whether the published demo store says every step of its build is done."""
    db = demo_db(data_dir)
    if not db.is_file():
        return False
    try:
        with store.connect(db, read_only=True) as con:
            return store.build_complete(con)
    except Exception:  # noqa: BLE001 - a store being replaced or unreadable is not complete
        return False


def build_holder(data_dir: str | Path) -> int | None:
    """The pid of the process building the demo in ``data_dir``, or None when no build runs."""
    path = Path(data_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a link or FIFO there is no build
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


@contextmanager
def build_lock(data_dir: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold the demo build's lock of ``data_dir``; wait for a running build (or refuse: ``wait=False``)."""
    path = Path(data_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock(path)  # never through a symbolic link (io.safe_files)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if not wait:
                raise InputError(path.parent, f"a demo build (pid {holder}) is already running") from None
            print(f"waiting for the demo build already running (pid {holder}, log {path.parent / LOG_NAME})",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting build)


def start_detached(data_dir: str | Path, retrain: bool = False) -> str:
    """Start ``agg2exp demo`` on ``data_dir`` in a session of its own; return one line saying what happens."""
    data_dir = Path(data_dir)
    log = data_dir / LOG_NAME
    if demo_complete(data_dir) and not retrain:
        return f"demo store {demo_db(data_dir)} is complete"
    holder = build_holder(data_dir)
    if holder is not None:
        return f"the demo build is already running (pid {holder}); its log: {log}"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "agg2exp_core", "demo", "--data-dir", str(data_dir)] + (["--retrain"] * retrain)
    append = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        log_fd = os.open(log, append, NEW_FILE_MODE)
    except OSError as err:
        raise InputError(log, f"cannot write the build log ({err.strerror or err}; a symbolic link there is "
                              "refused)") from None
    with os.fdopen(log_fd, "ab") as out:
        out.write(f"\n--- demo build started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return (f"building the demo store {demo_db(data_dir)} in the background (pid {process.pid}; log {log}; "
            f"it goes on when the dashboard stops; stop it with: kill -TERM -{process.pid})")
