"""The tool's own files in folders others may write to: locks, temporaries, work files.

A lock or temporary name that someone replaced by a symbolic link (or a hard link) would
make the tool write into the file it points at: ``study.duckdb.lock -> ~/.bashrc`` had the
lock overwrite it with a pid. Locks are opened with ``O_NOFOLLOW`` and must be regular
files with one link; temporaries get a fresh name (``mkstemp``: ``O_EXCL``, never an
existing file) and the permissions an ordinary new file would have (umask), so a
group-private store folder (docs/DEPLOYMENT.md) stays readable by its group.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from agg2exp_core.errors import InputError



def _umask() -> int:
    """The process's umask, read from /proc (setting it to read it would race other threads' files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # elsewhere: a brief, safe value while reading it
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()
LOCK_MODE = 0o660  # the store's group may take the lock too (less the umask)


def open_lock(path: Path) -> int:
    """A read-write descriptor of the lock file at ``path`` (created if absent), never through a link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, LOCK_MODE)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(path, "is a symbolic link: refusing to follow it (someone may have put it there; "
                                   "remove it)") from None
        raise
    problem = _not_plain(os.fstat(fd))
    if problem:
        os.close(fd)
        raise InputError(path, f"{problem}: refusing to use it as a lock (remove it)")
    return fd


def _not_plain(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink != 1:
        return "a hard link to another file"
    return None


def refuse_link(path: Path, what: str) -> None:
    """``InputError`` if ``path`` is a symbolic link (a work file of ours must never be one)."""
    if path.is_symlink():
        raise InputError(path, f"is a symbolic link: refusing to use it as {what} (remove it)")


def temporary_beside(target: Path) -> tuple[int, Path]:
    """A new file ``.<target>.<pid>.<random>.tmp`` beside ``target``: (descriptor, path), mode as umask allows."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, NEW_FILE_MODE)  # mkstemp makes 0600: the published file should read like any other
    return fd, Path(name)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so renames into it survive a crash (no-op where the file system cannot)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
