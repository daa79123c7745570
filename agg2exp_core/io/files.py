"""What a scan path may be: a regular file, and for detached headers a data file beside it.

A FIFO (or a character device) given as a scan blocks the reading process forever on
``open``; ``/dev/zero`` never ends. So a file is opened without blocking and checked to
be a regular file before any reader sees it.

MetaImage (``ElementDataFile``) and NRRD (``data file``) headers name the file that holds
their voxels. A header from someone else could name ``/etc/passwd`` (its bytes would
become voxels, then artefacts and dashboard images) or a FIFO. SimpleITK opens whatever
the header names and has no option to restrict it, and no library exposes the name before
reading, so the few header lines are parsed here: the data file must be a single relative
name inside the header's folder (after resolving symlinks), a regular file, and, for
uncompressed data, of the size the header declares.
"""
from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

from agg2exp_core.errors import InputError

HEADER_BYTES = 1 << 16  # detached headers are a few hundred bytes; more is not a header we read


def check_regular(path: str | Path) -> os.stat_result:
    """The ``stat`` of ``path`` if it is a regular file; one ``InputError`` otherwise (never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, without a writer
    except OSError as err:
        raise InputError(path, f"cannot open ({err.strerror or type(err).__name__})") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, f"not a regular file ({_kind(info.st_mode)}); not read")
    return info


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def header_fields(path: Path) -> dict[str, str]:
    """The ``key: value`` / ``Key = Value`` lines of a MetaImage or NRRD header (keys lower-case, no spaces)."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    text = head.decode("latin-1")
    nrrd = text.startswith("NRRD")
    fields = {}
    for line in text.splitlines()[1 if nrrd else 0:]:
        if nrrd and not line.strip():
            break  # a blank line ends an NRRD header; attached data follows
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":" if nrrd else "=")
        if nrrd and value.startswith("="):  # 'key:=value' is NRRD's key/value metadata, not a field
            continue
        if sep:
            fields[re.sub(r"\s+", "", key).lower()] = value.strip()
        if not nrrd and key.strip().lower() == "elementdatafile":
            break  # MetaImage's last header line; attached data follows
    return fields


def detached_data_file(path: Path) -> Path | None:
    """The checked data file a MetaImage / NRRD header names (None: the data is in the header's file)."""
    fields = header_fields(path)
    nrrd = "datafile" in fields or "sizes" in fields
    name = fields.get("datafile") if nrrd else fields.get("elementdatafile")
    if name is None or (not nrrd and name.upper() == "LOCAL"):
        return None
    if name.upper() == "LIST" or len(name.split()) > 1 or "%" in name:
        raise InputError(path, f"names several data files ({name!r}); give one data file beside the header")
    if os.path.isabs(name):
        raise InputError(path, f"names the data file {name!r} by an absolute path; only a file in the header's "
                               "folder is read")
    folder = path.resolve().parent
    data = (path.parent / name).resolve()
    if not data.is_relative_to(folder):
        raise InputError(path, f"names the data file {name!r}, which lies outside the header's folder; not read")
    check_regular(data)
    return data


def check_data_size(path: Path, data: Path, declared_bytes: int) -> None:
    """An uncompressed detached data file holds exactly the declared bytes (after a declared skip)."""
    fields = header_fields(path)
    compressed = fields.get("compresseddata", "false").lower() == "true" or \
        fields.get("encoding", "raw").lower() not in ("raw",)
    if compressed:
        return
    skip = _number(fields.get("headersize", fields.get("byteskip", "0")))
    size = os.stat(data).st_size
    if skip < 0 or not math.isfinite(skip):  # -1: the data is the file's last bytes
        ok = size >= declared_bytes
    else:
        ok = size == declared_bytes + int(skip)
    if not ok:
        raise InputError(path, f"its data file {data.name} holds {size:,} bytes, the header declares "
                               f"{declared_bytes:,}{f' after {int(skip)} skipped' if skip > 0 else ''}; not read")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
