"""Stores that carry SQL of their own, as a colleague's file might: a clean store copied and
given one extra object with DuckDB's defaults (what the attack in issue #21 did)."""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

SECRET = "cookie_secret = 'agg2exp-planted-secret-4b1d'"


def secrets_file(folder: Path) -> Path:
    """A stand-in for ``.streamlit/secrets.toml`` holding a marker no page may ever show."""
    path = folder / ".streamlit" / "secrets.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SECRET + "\n")
    return path


def planted(clean: Path, target: Path, *statements: str) -> Path:
    """A copy of ``clean`` at ``target`` with ``statements`` run on it (a plain connection)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clean, target)
    with duckdb.connect(str(target)) as con:
        for statement in statements:
            con.execute(statement)
    return target


def reading_macro(secrets: Path) -> str:
    """The macro of the issue: ``lower()`` returning a file's content (the dashboard calls ``lower``)."""
    return f"CREATE MACRO lower(x) AS (SELECT content FROM read_text('{secrets}'))"


SHADOWED_AVG = "CREATE MACRO avg(x) AS 0.99"
EXTRA_VIEW = "CREATE VIEW cohort_view AS SELECT * FROM cases"
# One of each kind of object a store may define beyond the schema, and the words the refusal names it by.
FOREIGN_OBJECTS = {
    "macro": (SHADOWED_AVG, "macro avg"),
    "table macro": ("CREATE MACRO everything() AS TABLE SELECT * FROM cases", "macro everything"),
    "view": (EXTRA_VIEW, "view cohort_view"),
    "sequence": ("CREATE SEQUENCE counter", "sequence counter"),
    "index": ("CREATE INDEX by_dataset ON cases(dataset)", "index by_dataset"),
    "type": ("CREATE TYPE mood AS ENUM ('calm')", "type mood"),
    "schema": ("CREATE SCHEMA elsewhere", "schema elsewhere"),
    "table": ("CREATE TABLE notes(text VARCHAR)", "table main.notes"),
    "column": ("ALTER TABLE cases ADD COLUMN note VARCHAR", "column cases.note"),
    # a generated column falsifies every value read: Dice rebuilt as a constant
    "generated column": ("ALTER TABLE dice RENAME TO dice_old; CREATE TABLE dice(model_sha256 VARCHAR, "
                         "case_id VARCHAR, class_id INTEGER, dice DOUBLE GENERATED ALWAYS AS (0.99) VIRTUAL); "
                         "DROP TABLE dice_old", "generated column dice.dice"),
}
