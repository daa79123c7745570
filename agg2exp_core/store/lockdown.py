"""Opening a store file that may come from someone else: the one place that does it.

A DuckDB file carries SQL of its own: macros (which shadow built-ins such as ``avg()`` or
``lower()``), views, generated columns, sequences, types. Read with DuckDB's defaults, such
a store could read other files (``read_text('.streamlit/secrets.toml')``), install and load
extensions, or silently falsify every statistic. So every connection to a store, the
dashboard's, the writer's and ``analyze``'s, is made here:

1. attached to a private in-memory database (``READ_ONLY`` for readers);
2. external access (files, network, ``ATTACH``, ``COPY``) and extension auto-install/auto-load
   turned off, then the configuration locked, so nothing the store holds can turn them on;
3. refused, with one line naming the object, when the file defines anything the schema
   (``schema.SCHEMA``) does not: a macro, view, sequence, index, type, schema, table or
   column, or a generated column. Checked through ``system.main``'s catalog functions before
   the store becomes the current database (``USE store``): a store's macro named like a
   catalog function would otherwise answer the check itself.

DuckDB offers no sandbox for a file's own definitions (a macro named like a built-in still
wins under the lock), hence the check by hand against the schema.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import duckdb

from agg2exp_core.errors import InputError
from agg2exp_core.store.schema import SCHEMA, init_schema

ALIAS = "store"                      # the attached store's name on its connection
LOCKDOWN = ("SET enable_external_access = false", "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false", "SET lock_configuration = true")
# What a file may define beyond tables, each listed by DuckDB's catalog functions; an Agg2Exp store defines none.
_FOREIGN = (("macro", "SELECT function_name FROM system.main.duckdb_functions() "
                      "WHERE database_name = ? AND NOT internal"),
            ("view", "SELECT view_name FROM system.main.duckdb_views() WHERE database_name = ? AND NOT internal"),
            ("sequence", "SELECT sequence_name FROM system.main.duckdb_sequences() WHERE database_name = ?"),
            ("index", "SELECT index_name FROM system.main.duckdb_indexes() WHERE database_name = ?"),
            ("type", "SELECT type_name FROM system.main.duckdb_types() WHERE database_name = ? AND NOT internal"),
            ("schema", "SELECT schema_name FROM system.main.duckdb_schemas() "
                       "WHERE database_name = ? AND NOT internal"))


def open_reader(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A locked-down read-only connection whose current database is the store file.

    Raises ``duckdb.Error`` for a file DuckDB cannot read and ``InputError`` for a store
    that defines objects the schema does not know.
    """
    return _open(Path(path), read_only=True)


def open_writable(path: str | Path) -> duckdb.DuckDBPyConnection:
    """The same, writable (the writer's own file): checked before anything is written to it."""
    return _open(Path(path), read_only=False)


def _open(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    # a writer spills next to its file, as DuckDB does for a file it opens itself (not into the working folder)
    con = duckdb.connect(":memory:", config={} if read_only else {"temp_directory": f"{path.absolute()}.tmp"})
    try:
        # an absolute path: duckdb_databases() reports it so, and the writer compares it with its own
        con.execute(f"ATTACH ? AS {ALIAS}" + (" (READ_ONLY)" if read_only else ""), [str(path.absolute())])
        for statement in LOCKDOWN:
            con.execute(statement)
        # checked before the store becomes the current database: from then on its macros would shadow
        # even the catalog functions that list them
        refuse_foreign_objects(con, path)
        con.execute(f"USE {ALIAS}")
    except BaseException:
        con.close()
        raise
    return con


def refuse_foreign_objects(con: duckdb.DuckDBPyConnection, path: str | Path, database: str = ALIAS) -> None:
    """``InputError`` naming the first object the store defines beyond the schema (and how many more)."""
    found = foreign_objects(con, database)
    if found:
        more = f" (and {len(found) - 1} more object(s))" if len(found) > 1 else ""
        raise InputError(path, f"the store defines {found[0]}{more}, which no Agg2Exp store holds: refused, since "
                               "SQL stored in the file would run on every read")


def foreign_objects(con: duckdb.DuckDBPyConnection, database: str = ALIAS) -> list[str]:
    """What ``database`` defines beyond the schema, e.g. ``["macro avg", "view v", "column cases.x"]``."""
    found = [f"{kind} {name}" for kind, sql in _FOREIGN for (name,) in con.execute(sql, [database]).fetchall()]
    known = schema_columns()
    tables = con.execute("SELECT schema_name, table_name FROM system.main.duckdb_tables() WHERE database_name = ? "
                         "ORDER BY table_name", [database]).fetchall()
    found += [f"table {schema}.{table}" for schema, table in tables if schema != "main" or table not in known]
    columns = con.execute("SELECT table_name, column_name, is_generated FROM system.main.duckdb_columns() "
                          "WHERE database_name = ? AND schema_name = 'main' AND NOT internal "
                          "ORDER BY table_name, column_index", [database]).fetchall()
    for table, column, generated in columns:
        if table not in known:
            continue                                  # named above (a table) or a view's column (named above)
        if column not in known[table]:
            found.append(f"column {table}.{column}")
        elif generated:
            found.append(f"generated column {table}.{column}")
    return found


@lru_cache(maxsize=1)
def schema_columns() -> dict[str, frozenset[str]]:
    """Table -> column names of the current schema (built once in a scratch database)."""
    with duckdb.connect(":memory:") as scratch:
        scratch.execute(SCHEMA)
        rows = scratch.execute("SELECT table_name, column_name FROM system.main.duckdb_columns() "
                               "WHERE database_name = current_database()").fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    return {table: frozenset(names) for table, names in columns.items()}


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """The store at ``path`` (created with the schema unless ``read_only``), locked down as above.

    Any problem opening it is an ``InputError`` naming the file: not a DuckDB file, locked by
    another process, a folder that cannot be made, or objects the schema does not know.
    """
    path = Path(path)
    try:
        if read_only:
            return open_reader(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        con = open_writable(path)
    except (duckdb.Error, OSError) as err:  # not a DuckDB file, locked by another writer, bad folder
        raise InputError(path, f"cannot open the store ({str(err).splitlines()[0]})") from None
    init_schema(con)
    return con
