"""Property-based fuzzing of the manifest parser and the importer (hypothesis).

Arbitrary text or CSV cells give either a valid frame or an ``InputError`` whose message
is one line naming the file -- never another exception type.
"""
from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agg2exp_core.io.manifest import AGE_RANGE, CASE_ID, read_manifest, read_metadata
from agg2exp_core.errors import InputError
from agg2exp_core.pipeline.importer import import_agg2exp_csv, mass_cube, read_published_csv

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
SLOW_FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)

WORKDIR = Path(tempfile.mkdtemp(prefix="agg2exp-fuzz-"))
(WORKDIR / "img.nii.gz").write_bytes(b"")  # an existing file for the path columns
(WORKDIR / "sub").mkdir(exist_ok=True)

NASTY = ["", " ", "nan", "NaN", "NA", "null", "None", "inf", "-inf", "1e309", "-0", "0", "120", "120.0001",
         "-1", "63", " 63 ", "F", "m", "female", "X", "train", "TEST", "holdout", "img.nii.gz", "./img.nii.gz",
         "../img.nii.gz", "/etc/passwd", "sub", "img.nii.gz\x00", "c1", "c1 ", "'; DROP TABLE cases; --",
         '"quoted"', "a,b", "line\nbreak", "\r", "\t", "é", "\u202e", "0x10", "1_000", "True"]
cell = st.one_of(st.sampled_from(NASTY), st.text(max_size=12))
MANIFEST_COLUMNS = ["case_id", "image", "label", "sex", "age", "dataset", "split", "roi:effusion", "extra", "",
                    "case_id ", "Case_ID", "sex"]


def csv_text(header, rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@st.composite
def table(draw, columns, min_rows=0, max_rows=5):
    header = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=len(columns)))
    n = draw(st.integers(min_rows, max_rows))
    rows = [[draw(cell) for _ in header] for _ in range(n)]
    return csv_text(header, rows)


def write(name: str, body) -> Path:
    path = WORKDIR / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body, encoding="utf-8", errors="surrogatepass")
    return path


def assert_clean_error(err: InputError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message and "\r" not in message, repr(message)
    assert message.startswith(str(path)), message


def check_sex_age(frame: pd.DataFrame) -> None:
    """Sex is F, M or missing; age is missing or a finite number of years in range."""
    if "sex" in frame:
        assert all(pd.isna(s) or s in ("F", "M") for s in frame.sex), frame.sex.tolist()
    if "age" in frame:
        for age in frame.age:
            assert pd.isna(age) or (math.isfinite(age) and AGE_RANGE[0] <= age <= AGE_RANGE[1]), age


def check_manifest(frame: pd.DataFrame) -> None:
    assert frame.case_id.map(lambda c: isinstance(c, str) and CASE_ID.fullmatch(c) is not None).all()
    assert not frame.case_id.duplicated().any()
    check_sex_age(frame)
    assert frame.image.map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()


def parse_or_error(parser, path):
    try:
        return parser(path)
    except InputError as err:
        assert_clean_error(err, path)
        return None


@FUZZ
@given(body=st.one_of(st.text(max_size=200), table(MANIFEST_COLUMNS)))
def test_manifest_parser_yields_a_valid_frame_or_one_line_error(body):
    path = write("manifest.csv", body)
    frame = parse_or_error(read_manifest, path)
    if frame is not None:
        check_manifest(frame)


@FUZZ
@given(body=st.binary(max_size=200))
def test_manifest_parser_survives_binary_garbage(body):
    path = write("manifest.csv", body)
    frame = parse_or_error(read_manifest, path)
    if frame is not None:
        check_manifest(frame)


@FUZZ
@given(body=st.one_of(st.text(max_size=200), table(["case_id", "sex", "age", "patient", "dataset", "x"])))
def test_metadata_parser_yields_a_valid_frame_or_one_line_error(body):
    path = write("meta.csv", body)
    frame = parse_or_error(read_metadata, path)
    if frame is None:
        return
    assert frame.case_id.map(lambda c: isinstance(c, str) and c != "").all()
    assert not frame.case_id.duplicated().any()
    check_sex_age(frame)


# ---------------------------------------------------------------- importer
NAMES = ["aorta", "heart", "vertebrae", "vertebraes", "x", "a_explanation_in_b"]
mass_value = st.one_of(st.sampled_from(["0", "1", "0.5", "0.25", "", "nan", "inf", "-0.1", "1e-4", "x", "1,0"]),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=4))


@st.composite
def published_csv(draw):
    """Mostly well-formed aggregate CSVs (so validation is reached), with fuzzed cells and columns."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    columns = ["patient"] + [f"{a}_explanation_in_{b}_mass" for a in names for b in names] + \
              [f"{a}_dice" for a in names]
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))
    if draw(st.integers(0, 4)) == 0:
        columns = [c for c in columns if c != draw(st.sampled_from(columns))]
    n = draw(st.integers(0, 4))
    rows = []
    for i in range(n):
        row = []
        valid = np.random.default_rng(i).dirichlet(np.ones(len(names)))
        for column in columns:
            if column == "patient":
                row.append(draw(st.one_of(st.just(f"p{i}"), cell)))
            elif column.endswith("_mass") and draw(st.integers(0, 3)):
                a, b = column[: -len("_mass")].split("_explanation_in_", 1)
                row.append(repr(float(valid[names.index(b)])) if b in names else "0")
            else:
                row.append(draw(mass_value))
        rows.append(row)
    return csv_text(columns, rows)


def check_published(path, names, frame) -> None:
    ids = frame.patient.astype(str)
    assert names and ids.map(lambda p: p.strip() != "" and p != "nan").all() and not ids.duplicated().any()
    sums = mass_cube(path, frame, names).sum(axis=2)
    assert np.all(np.isnan(sums) | np.isclose(sums, 1.0, atol=1e-3))


@FUZZ
@given(body=st.one_of(published_csv(), st.text(max_size=200), st.binary(max_size=100).map(lambda b: b)))
def test_importer_reader_yields_a_valid_frame_or_one_line_error(body):
    path = write("published.csv", body)
    try:
        names, frame = read_published_csv(path)
    except InputError as err:
        assert_clean_error(err, path)
        return
    check_published(path, names, frame)


@SLOW_FUZZ
@given(body=published_csv(), meta=st.one_of(st.none(), table(["case_id", "sex", "age"], max_rows=3)))
def test_import_writes_whole_or_nothing(body, meta):
    path = write("published.csv", body)
    meta_path = None if meta is None else write("meta.csv", meta)
    db = WORKDIR / "fuzz.duckdb"
    before = db.read_bytes() if db.exists() else None
    try:
        run_id = import_agg2exp_csv(path, db, metadata=meta_path)
    except InputError as err:
        message = str(err)
        assert "\n" not in message and "\r" not in message, repr(message)
        assert message.startswith((str(path), str(meta_path))), message
        assert (db.read_bytes() if db.exists() else None) == before, "a rejected import changes nothing"
        return
    import duckdb
    with duckdb.connect(str(db), read_only=True) as con:
        n = con.execute("SELECT count(DISTINCT case_id) FROM local_importance WHERE run_id = ?", [run_id]).fetchone()[0]
        dup = con.execute("SELECT count(*) - count(DISTINCT (case_id, target_id, source_id)) FROM local_importance "
                          "WHERE run_id = ?", [run_id]).fetchone()[0]
    assert dup == 0
    assert n == len(pd.read_csv(path))


@pytest.fixture(autouse=True, scope="module")
def _cleanup():
    yield
    import shutil
    shutil.rmtree(WORKDIR, ignore_errors=True)
