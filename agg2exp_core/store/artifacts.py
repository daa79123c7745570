"""Slice artefacts, defined once: the npz keys, the durable writer, the validating reader,
and where a store's artefacts may lie (docs/ARCHITECTURE.md, "Slice artefacts").

One ``<case>.npz`` per case and run, arrays in RAS+ voxel order ``[X, Y, Z]``:
``ct`` (int16 HU), ``pred`` (uint8 labels), ``gt`` (optional), ``spacing`` (mm, 3),
``ct_window`` (HU, 2), ``roi_<name>`` (uint8 masks), ``attrvol_block`` (voxels per block, 3)
and per explained class channel ``c``: ``index_<c>`` (the x, y, z of its largest
cross-sections), ``attr_<c>_<x|y|z>`` (float32 planes through them), ``attrvol_<c>``
(block-averaged volume), ``relevance_<c>`` (causal runs: uint8 mask). The pipeline writes
them (``pipeline.artifacts``), the dashboard reads them with ``read_artifact``: a file that
is truncated, empty or not shaped like this is an ``ArtifactUnreadable`` naming it.

An artefact written by ``write_artifact`` is on disk (file and folder fsynced) before the
store row that names it commits. Artefacts live under the store's folder or under the run's
artefact root (``--data-dir``, recorded in the store's ``meta`` as ``artifact_root:<run>``);
a reader shows one only inside the store's folder or inside a root its operator allowed.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

import duckdb
import numpy as np

from agg2exp_core.errors import InputError
from agg2exp_core.io.safe_files import sync_folder, temporary_beside

AXES = ("x", "y", "z")
SCALARS = {"spacing": 3, "ct_window": 2, "attrvol_block": 3}


class ArtifactUnreadable(InputError):
    """A slice artefact that cannot be read or is not shaped as the format says."""


def index_key(channel: int) -> str:
    return f"index_{int(channel)}"


def plane_key(channel: int, axis: str) -> str:
    return f"attr_{int(channel)}_{axis}"


def volume_key(channel: int) -> str:
    return f"attrvol_{int(channel)}"


def relevance_key(channel: int) -> str:
    """A class's supervoxel relevance mask (uint8 ``[X, Y, Z]``, 1 = relevant)."""
    return f"relevance_{int(channel)}"


def roi_key(name: str) -> str:
    return f"roi_{name}"


def explained_channels(keys: Iterable[str]) -> list[int]:
    return sorted(int(k.split("_")[1]) for k in keys if k.startswith("index_") and k.split("_")[1].isdigit())


def extra_rois(keys: Iterable[str]) -> list[str]:
    return sorted(k[len("roi_"):] for k in keys if k.startswith("roi_"))


def write_artifact(arrays: dict, path: Path) -> None:
    """Write an npz under a fresh temporary name, fsync it, rename it into place, fsync the folder:
    a crash leaves the old file or the new one, never a half-written one, and never a name the
    store records without its bytes on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def read_artifact(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an artefact, checked against the format; ``ArtifactUnreadable`` otherwise."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("not an npz archive")
        with npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError) as err:
        raise ArtifactUnreadable(path, f"artefact unreadable ({type(err).__name__}: "
                                       f"{str(err).splitlines()[0] if str(err) else 'truncated or empty'})") from None
    problem = _shape_problem(arrays)
    if problem:
        raise ArtifactUnreadable(path, f"artefact unreadable ({problem})")
    return arrays


def _shape_problem(arrays: dict) -> str | None:
    ct = arrays.get("ct")
    if ct is None or ct.ndim != 3 or 0 in ct.shape:
        return "no 3-D 'ct' array"
    for key, value in arrays.items():
        if key in SCALARS and value.shape != (SCALARS[key],):
            return f"'{key}' has shape {value.shape}, expected ({SCALARS[key]},)"
        masks = key in ("pred", "gt") or key.startswith(("roi_", "relevance_"))
        if masks and value.shape != ct.shape:
            return f"'{key}' has shape {value.shape}, the CT {ct.shape}"
    for channel in explained_channels(arrays):
        index = arrays[index_key(channel)]
        if index.shape != (3,) or not all(0 <= int(i) < n for i, n in zip(index, ct.shape)):
            return f"'{index_key(channel)}' is not a voxel of the CT"
        for axis, name in enumerate(AXES):
            plane = arrays.get(plane_key(channel, name))
            expected = tuple(n for a, n in enumerate(ct.shape) if a != axis)
            if plane is not None and plane.shape != expected:
                return f"'{plane_key(channel, name)}' has shape {plane.shape}, expected {expected}"
    return None


# ----------------------------------------------------------------------------- where artefacts lie
def _root_key(run_id: str) -> str:
    return f"artifact_root:{run_id}"


def record_artifact_root(con: duckdb.DuckDBPyConnection, run_id: str, root: Path) -> None:
    """Remember where a run's artefacts go (an absolute folder), for readers on other machines' paths."""
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [_root_key(run_id), str(Path(root).resolve())])


def artifact_root(con: duckdb.DuckDBPyConnection, run_id: str) -> Path | None:
    row = con.execute("SELECT value FROM meta WHERE key = ?", [_root_key(run_id)]).fetchone()
    return Path(row[0]) if row and row[0] else None


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path`` (resolved: links followed) lies in one of ``roots`` (resolved)."""
    path = Path(path).resolve()
    return any(path == r or r in path.parents for r in (Path(root).resolve() for root in roots))
