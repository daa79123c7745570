"""The store as the queries see it: a reference to one published version, the one query runner.

Every query function of this package takes a DuckDB connection whose current database is
the store (``lockdown.open_reader`` / the writer's connection) and returns frames or numpy
arrays. Every value from the caller travels as a ``?`` parameter; the only SQL text that
varies is chosen from fixed fragments (the mass columns of ``vocabulary.MASS_KINDS``,
``cohort.where_clause``, the value and group fragments of ``distributions``).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pandas as pd

from agg2exp_core.store.lockdown import ALIAS
from agg2exp_core.vocabulary import MASS_KINDS


@dataclass(frozen=True)
class StoreRef:
    """A published store file as seen now: path plus (inode, mtime_ns, size).

    The writer publishes by atomic rename, so a new signature means a new version: readers
    key their connections and caches on it.
    """

    path: str
    signature: tuple[int, int, int]

    @property
    def folder(self) -> Path:
        return Path(self.path).parent

    @property
    def name(self) -> str:
        return Path(self.path).name


def store_ref(path: str | Path) -> StoreRef | None:
    """The current state of a store file, or None when there is no such file."""
    path = Path(path).expanduser().resolve()
    try:
        info = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return StoreRef(str(path), (info.st_ino, info.st_mtime_ns, info.st_size))


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | tuple = (),
          numpy: bool = False) -> pd.DataFrame | dict:
    """Run one parameterised query; ``numpy=True`` returns the columns as numpy arrays (no frame)."""
    result = con.execute(sql, list(params))
    return result.fetchnumpy() if numpy else result.df()


@contextmanager
def reading(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor of a shared reader connection, on the store (connections are shared between threads)."""
    cursor = con.cursor()
    try:
        cursor.execute(f"USE {ALIAS}")
        yield cursor
    finally:
        cursor.close()


def table_names(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    frame = fetch(con, "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()")
    return frozenset(frame.table_name)


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the store has a table that older stores lack (causal and analysis tables); ≈ 1 ms."""
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                            "AND table_name = ?", [name]).fetchone()[0])


def has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether a table has a column added after its first release (``schema.ADDED_COLUMNS``; older stores
    lack it, and readers never alter a store)."""
    return bool(con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
                            "AND table_name = ? AND column_name = ?", [table, column]).fetchone()[0])


def mass_column(kind: str) -> str:
    """The column of a mass kind (a fixed name of the schema, so safe as SQL text)."""
    if kind not in MASS_KINDS:
        raise ValueError(f"unknown mass kind {kind!r}")
    return MASS_KINDS[kind]


def json_or_empty(text):
    """Parsed JSON text, ``{}`` for NULL or text that is not JSON."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return {}
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


def empty(columns: list[str]) -> pd.DataFrame:
    """The frame a query of a table older stores lack returns there."""
    return pd.DataFrame(columns=columns)
