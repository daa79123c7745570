"""Fingerprints of a case's input files, so that resumption keys done-ness on the inputs.

A case is done for a run only if it was computed from the files its manifest row names
now: same content (sha256), checked cheaply by path, size and modification time first.
A moved or touched but identical file is not recomputed; a changed scan, label or RoI
mask, or a different manifest pointing elsewhere, is. A DICOM series folder counts as the
files it holds (total size, newest modification, one hash over their names and contents);
a MetaImage / NRRD header counts with its data file.

A case is hashed after its headers are checked and before its voxels are read, and its
files are confirmed unchanged (same inode, size, modification and change time) after the
read (``file_identities``): a file swapped or rewritten between the hash and the read
fails the case instead of storing results under the other file's fingerprint.
``plan_cases`` picks what a run still has to compute.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

from agg2exp_core import store
from agg2exp_core.errors import InputError
from agg2exp_core.io.files import check_regular, detached_data_file
from agg2exp_core.io.headers import ITK_SUFFIXES
from agg2exp_core.io.manifest import ROI_PREFIX


def input_columns(row: Mapping) -> list[str]:
    """The manifest columns of a row that name an input file."""
    return [c for c in ("image", "label", *sorted(k for k in row if str(k).startswith(ROI_PREFIX))) if row.get(c)]


def file_stamp(path: str, with_hash: bool = True) -> dict:
    files = _files(path)
    stats = [os.stat(f) for f in files]
    stamp = {"path": os.path.abspath(path), "size": sum(s.st_size for s in stats),
             "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
    if with_hash:
        stamp["sha256"] = file_sha256(path)
    return stamp


def file_sha256(path: str) -> str:
    """sha256 of a file, or of a folder's files (their names relative to it, then their bytes)."""
    digest = hashlib.sha256()
    for name in _files(path):
        if name != path:
            digest.update(os.path.relpath(name, os.path.dirname(path) if os.path.isfile(path) else path).encode()
                          + b"\0")
        check_regular(name)  # a FIFO swapped in would block open() forever
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _files(path: str) -> list[str]:
    """The file itself (with a detached header's data file), or the regular files under a folder in a fixed order."""
    if not os.path.isdir(path):
        data = detached_data_file(Path(path)) if path.lower().endswith(tuple(ITK_SUFFIXES)) else None
        return [path] if data is None else [path, str(data)]
    return sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                  if os.path.isfile(os.path.join(root, f)))


def input_fingerprint(row: Mapping) -> dict[str, dict]:
    """``{column: {path, size, mtime_ns, sha256}}`` of every input file of a manifest row."""
    return {column: file_stamp(str(row[column])) for column in input_columns(row)}


def file_identities(row: Mapping) -> dict[str, tuple]:
    """``{file: (device, inode, size, mtime_ns, ctime_ns)}`` of every input file of a row (a swap or
    a rewrite changes one of them; ctime cannot be set back by a user)."""
    identities = {}
    for column in input_columns(row):
        for name in _files(str(row[column])):
            s = os.stat(name)
            identities[name] = (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
    return identities


def check_unchanged(before: Mapping[str, tuple], row: Mapping) -> None:
    """An ``InputError`` naming the first input file that changed since ``before`` was taken."""
    after = file_identities(row)
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            raise InputError(name, "changed while the case was being read (replaced or rewritten after it was "
                                   "fingerprinted); the case is not stored, run it again")


def changed_inputs(stored: Mapping[str, Mapping], row: Mapping) -> list[str]:
    """Columns whose file differs from the one a case was computed from ([] = unchanged)."""
    columns = input_columns(row)
    changed = sorted(set(stored) ^ set(columns))  # a label or mask added or removed
    for column in (c for c in columns if c in stored):
        if not _same_file(stored[column], str(row[column])):
            changed.append(column)
    return changed


def _same_file(stamp: Mapping, path: str) -> bool:
    try:
        now = file_stamp(path, with_hash=False)
        if all(now[k] == stamp.get(k) for k in ("path", "size", "mtime_ns")):
            return True
        return now["size"] == stamp.get("size") and file_sha256(path) == stamp.get("sha256")
    except (OSError, InputError):  # gone, a FIFO, a header naming a bad data file: recomputed, and fails there
        return False


def plan_cases(con, summary, rows: list[dict], retry_crashed: bool) -> list[dict]:
    """The rows to compute: not done from the same inputs, not held back after a crash (those last).

    ``summary`` (a ``PrecomputeSummary``) collects the skipped, recomputed and held-back cases
    and the notes that say why.
    """
    run_id = summary.run_id
    markers = store.started_cases(con, run_id)  # left by a process that died computing them
    for case_id, started_at, pid in markers:
        if retry_crashed:
            store.clear_started(con, run_id, case_id)
        else:
            store.record_failure(con, run_id, case_id, store.CRASHED_STAGE,
                                 f"the process computing this case (pid {pid}, started {started_at:%Y-%m-%d %H:%M:%S}"
                                 " UTC) died before it was done; rerun with --retry-crashed to compute it again")
    done = store.done_inputs(con, run_id)
    crashed = store.crashed_cases(con, run_id) | {case_id for case_id, *_ in markers}
    timed_out = store.timed_out_cases(con, run_id)
    todo, retried, unknown = [], [], 0
    for row in rows:
        case_id = row["case_id"]
        if case_id in done:
            changed = changed_inputs(done[case_id], row) if done[case_id] is not None else []
            unknown += done[case_id] is None
            if not changed:
                summary.skipped.append(case_id)
                continue
            summary.recomputed.append(case_id)
            summary.notes.append(f"recomputing {case_id}: {', '.join(changed)} changed since it was computed")
        why = "ran out of time (--case-timeout)" if case_id in timed_out else "died"
        if case_id in crashed and not retry_crashed:
            summary.crashed.append(case_id)
            if case_id in timed_out:
                summary.timed_out.append(case_id)
            summary.notes.append(f"holding back {case_id}: a previous run {why} while computing it "
                                 "(recorded in failures); --retry-crashed computes it again")
        elif case_id in crashed:
            retried.append(row)
            summary.notes.append(f"computing {case_id} last: a previous run {why} while computing it")
        else:
            todo.append(row)
    if unknown:
        summary.notes.append(f"{unknown} done case(s) have no recorded input files (an older store): kept as done")
    return todo + retried  # a case that killed a run comes last, after every other case is safe


