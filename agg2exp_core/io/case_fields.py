"""Case metadata beyond the known manifest columns: any extra column, typed and validated.

Every manifest column other than ``case_id``, ``image``, ``label``, ``roi:*`` and the known
``sex``/``age``/``dataset``/``split`` is a field of the case (scanner, site, kernel, BMI, ...).
Its kind is inferred over the whole file: **numeric when every non-blank value is a finite
decimal number** (``12``, ``-0.5``, ``1e3``; not ``inf``, ``nan``, ``1_000`` or hex), else
categorical; a blank cell (empty or spaces) is "not recorded" for that case. A column with no
value at all is left out.

The file is untrusted: names must be short identifiers (a letter, then letters, digits, '_',
'-', '.'; at most ``MAX_NAME`` characters) that differ from each other and from the known
columns in more than letter case; values are at most ``MAX_VALUE`` characters of printable
text. Nothing of a value is ever evaluated: it is stored as text (and, for a numeric field,
as the float it spells), and read back through parameterised SQL only.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from agg2exp_core.errors import InputError

KNOWN_COLUMNS = ("case_id", "image", "label", "sex", "age", "dataset", "split")
ROI_PREFIX = "roi:"
NUMERIC, CATEGORICAL = "numeric", "categorical"   # as agg2exp_core.store.queries.fields
MANIFEST, DICOM = "manifest", "dicom"             # case_field.source
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
FIELD_NAME_RULE = "start with a letter, then letters, digits, '_', '-' or '.'"
MAX_NAME = 64
MAX_VALUE = 256
MAX_FIELDS = 200
# A plain decimal number; Python's float() would also take 'inf', 'nan', '1_000' and spaces inside.
DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
FIELD_COLUMNS = ("case_id", "name", "kind", "value", "number", "source")


def field_columns(columns: Iterable[str]) -> list[str]:
    """The columns of a manifest (or metadata CSV) that are case metadata fields."""
    return [str(c) for c in columns if str(c) not in KNOWN_COLUMNS and not str(c).startswith(ROI_PREFIX)]


def check_header(path: Path, text: str) -> None:
    """Refuse duplicate column names (pandas would rename the second one 'name.1' silently)."""
    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error:
        return   # pandas says what is wrong with the file
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        key = name.strip()
        if key and key in seen:
            raise InputError(path, f"column '{_shown(key)}' appears twice (columns {seen[key]} and {number})")
        seen[key] = number


def manifest_fields(path: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Long ``case_field`` rows (``FIELD_COLUMNS``, source 'manifest') of a validated frame's extra columns.

    ``frame``: the CSV as text (``dtype=str``), with a ``case_id`` column. Raises one ``InputError``
    naming the file and the column (and row) for a bad name or value.
    """
    path = Path(path)
    names = [c for c in field_columns(frame.columns) if not _unnamed_and_empty(path, frame, c)]
    _check_names(path, names)
    ids = frame["case_id"].astype(str).to_numpy()
    parts = [_column_rows(path, name, ids, frame[name]) for name in names]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(FIELD_COLUMNS))


def _column_rows(path: Path, name: str, ids, column: pd.Series) -> pd.DataFrame:
    """One column's rows, checked and typed with vectorised string operations (a registry has 10^5 cells)."""
    texts = column.astype(str).str.strip().reset_index(drop=True)
    _check_values(path, name, texts)
    given = texts.ne("").to_numpy()
    texts, ids = texts[given], ids[given]
    numeric = bool(len(texts)) and bool(texts.str.fullmatch(DECIMAL.pattern).all())
    numbers = pd.to_numeric(texts, errors="coerce") if numeric else None
    if numeric and not numbers.abs().lt(float("inf")).all():
        numeric = False   # '1e999' spells a decimal but is no finite number
    return pd.DataFrame({"case_id": ids, "name": name, "kind": NUMERIC if numeric else CATEGORICAL,
                         "value": texts.to_numpy(), "number": numbers.to_numpy() if numeric else None,
                         "source": MANIFEST}, columns=list(FIELD_COLUMNS))


def _check_values(path: Path, name: str, texts: pd.Series) -> None:
    long = texts.str.len().gt(MAX_VALUE).to_numpy()
    if long.any():
        row = int(long.argmax())
        raise InputError(path, f"row {row + 2}, column {name}: value of {len(texts[row])} characters, "
                               f"more than {MAX_VALUE}")
    control = texts.str.contains(CONTROL.pattern, regex=True).to_numpy()
    if control.any():
        raise InputError(path, f"row {int(control.argmax()) + 2}, column {name}: value holds control characters")


def header_fields(case_id: str, values: Mapping[str, object], numeric: Iterable[str]) -> pd.DataFrame:
    """``case_field`` rows (source 'dicom') of one case's header values; ``numeric`` names the numeric tags
    (a value that is not a finite number there is kept as text, and the field becomes categorical on write)."""
    rows = []
    numeric = set(numeric)
    for name, raw in values.items():
        text = _clean(raw)
        if not text:
            continue
        number = float(text) if name in numeric and DECIMAL.fullmatch(text) and _finite(text) else None
        rows.append((case_id, name, NUMERIC if number is not None else CATEGORICAL, text, number, DICOM))
    return pd.DataFrame(rows, columns=list(FIELD_COLUMNS))


def combine(*parts: pd.DataFrame) -> pd.DataFrame:
    """Rows of several sources, later ones winning for the same case and name (the manifest over a header)."""
    frames = [p for p in parts if p is not None and len(p)]
    if not frames:
        return pd.DataFrame(columns=list(FIELD_COLUMNS))
    both = pd.concat(frames, ignore_index=True)
    return both.drop_duplicates(["case_id", "name"], keep="last").reset_index(drop=True)


def _unnamed_and_empty(path: Path, frame: pd.DataFrame, column: str) -> bool:
    """A header cell left empty (pandas names it 'Unnamed: N'): ignored when the column is empty too
    (a trailing comma), refused when it holds values (they would have no name)."""
    if not column.startswith("Unnamed: "):
        return False
    if frame[column].astype(str).str.strip().eq("").all():
        return True
    raise InputError(path, f"column {int(column.split(': ')[1]) + 1} has values but no name in the header row")


def _check_names(path: Path, names: list[str]) -> None:
    if len(names) > MAX_FIELDS:
        raise InputError(path, f"{len(names)} metadata columns, more than {MAX_FIELDS}")
    folded: dict[str, str] = {k: k for k in KNOWN_COLUMNS}
    for name in names:
        if len(name) > MAX_NAME:
            raise InputError(path, f"column name '{_shown(name)}' has {len(name)} characters, more than {MAX_NAME}")
        if not FIELD_NAME.fullmatch(name):
            raise InputError(path, f"column name '{_shown(name)}' is not a plain field name ({FIELD_NAME_RULE}); "
                                   "rename the column")
        other = folded.get(name.lower())
        if other is not None:
            raise InputError(path, f"columns '{_shown(other)}' and '{_shown(name)}' differ only in letter case; "
                                   "rename one")
        folded[name.lower()] = name


def _clean(raw) -> str:
    """A header value as one line of printable text (multi-valued tags joined with '\\'), capped in length."""
    if raw is None:
        return ""
    if isinstance(raw, (list, tuple)) or (hasattr(raw, "__iter__") and not isinstance(raw, (str, bytes))):
        raw = "\\".join(str(v) for v in raw)
    text = " ".join(CONTROL.sub(" ", str(raw)).split())
    return text[:MAX_VALUE]


def _finite(text: str) -> bool:
    return abs(float(text)) != float("inf")


def _shown(name: str) -> str:
    """A name from the file as shown in a message: printable, capped."""
    text = CONTROL.sub("?", name)
    return text if len(text) <= 80 else text[:77] + "..."
