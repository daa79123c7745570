"""The repository documents itself: every store table and column is in docs/CONTRACTS.md, the
docs' links resolve inside the repository, and nothing points outside the clone (a user's
clone has no design folder beside it)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import duckdb
import pytest

from agg2exp_core.store.schema import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"
TEXT_SUFFIXES = {".py", ".md", ".toml", ".ini", ".txt", ".cfg", ".yml", ".yaml", ".example", ".json", ""}


def schema_columns() -> dict[str, list[str]]:
    """Every table of the schema and its columns in order, as DuckDB creates them."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(SCHEMA)
        rows = con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal "
                           "AND database_name = current_database() ORDER BY table_name, column_index").fetchall()
    finally:
        con.close()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return tables


def documented_columns() -> dict[str, list[str]]:
    """``| `table` | `col`, **`key`**, ... | holds |`` rows of CONTRACTS.md's store section."""
    tables = {}
    for line in CONTRACTS.read_text().splitlines():
        match = re.match(r"^\| `(\w+)` \| (.+?) \| .+ \|$", line)
        if match:
            tables[match[1]] = re.findall(r"`(\w+)`", match[2])
    return tables


def test_every_table_and_column_of_the_schema_is_documented_in_order():
    schema, documented = schema_columns(), documented_columns()
    assert len(schema) >= 30, "the schema must have been read"
    missing = sorted(set(schema) - set(documented))
    assert not missing, f"tables of store/schema.py missing from docs/CONTRACTS.md: {missing}"
    stale = sorted(set(documented) - set(schema))
    assert not stale, f"docs/CONTRACTS.md documents tables the schema does not have: {stale}"
    wrong = {t: (documented[t], schema[t]) for t in schema if documented[t] != schema[t]}
    assert not wrong, f"documented columns differ from the schema (documented, schema): {wrong}"


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    paths = [ROOT / name for name in listed.stdout.splitlines()]
    return [p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES and p.stat().st_size < 1_000_000]


def test_nothing_refers_to_files_outside_the_clone():
    outside = re.compile(r"\.\./" + "shared|" + "DESIGN" + r"\.md")  # split: this file must not match itself
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in tracked_text_files()
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if outside.search(line)]
    assert not hits, f"references to a design file outside the repository: {hits}"


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                      for p in (ROOT / "docs").glob("*.md"))])
def test_relative_links_of_the_docs_resolve(doc):
    path = ROOT / doc
    targets = re.findall(r"\]\((?!https?://|#|mailto:)([^)#\s]+)", path.read_text())
    broken = [t for t in targets if not (path.parent / t).exists()]
    assert not broken, f"{doc} links to missing files: {broken}"
