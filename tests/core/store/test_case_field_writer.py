"""write_case_fields replaces the named cases' fields in one transaction; a field keeps one kind."""
from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from agg2exp_core.store import queries, write_case_fields, write_new_case_fields
from agg2exp_core.store.schema import init_schema

COLUMNS = ["case_id", "name", "kind", "value", "number", "source"]


def rows(*values) -> pd.DataFrame:
    return pd.DataFrame(list(values), columns=COLUMNS)


@pytest.fixture
def con():
    con = duckdb.connect()
    init_schema(con)
    con.execute("INSERT INTO cases(case_id, dataset) VALUES ('a', 'r'), ('b', 'r')")
    write_case_fields(con, rows(("a", "bmi", "numeric", "20", 20.0, "manifest"),
                                ("a", "site", "categorical", "north", None, "manifest"),
                                ("b", "bmi", "numeric", "30", 30.0, "manifest")), ["a", "b"])
    return con


def test_a_write_replaces_only_the_named_cases(con):
    write_case_fields(con, rows(("a", "kvp", "numeric", "120", 120.0, "dicom")), ["a"])
    got = con.execute("SELECT case_id, name FROM case_field ORDER BY ALL").fetchall()
    assert got == [("a", "kvp"), ("b", "bmi")]


def test_a_field_given_two_kinds_becomes_categorical_for_every_case(con):
    write_case_fields(con, rows(("b", "bmi", "categorical", "obese", None, "manifest")), ["b"])
    catalog = queries.field_catalog(con).set_index("name")
    assert catalog.loc["bmi", "kind"] == "categorical"
    assert queries.case_fields(con).bmi.tolist() == ["20", "obese"]
    assert con.execute("SELECT count(*) FROM case_field WHERE number IS NOT NULL").fetchone()[0] == 0


def test_a_failing_write_changes_nothing(con):
    before = con.execute("SELECT * FROM case_field ORDER BY ALL").fetchall()
    with pytest.raises(duckdb.Error):   # two rows for one case and name break the key
        write_case_fields(con, rows(("a", "x", "categorical", "1", None, "manifest"),
                                    ("a", "x", "categorical", "2", None, "manifest")), ["a"])
    assert con.execute("SELECT * FROM case_field ORDER BY ALL").fetchall() == before


def test_new_case_fields_leave_known_cases_alone(con):
    write_new_case_fields(con, rows(("a", "site", "categorical", "east", None, "manifest"),
                                    ("c", "site", "categorical", "south", None, "manifest")), ["a", "c"])
    got = dict(con.execute("SELECT case_id, value FROM case_field WHERE name = 'site'").fetchall())
    assert got == {"a": "north", "c": "south"}


def test_fields_of_cases_not_registered_are_not_counted(con):
    write_case_fields(con, rows(("z", "site", "categorical", "x", None, "manifest")), ["z"])
    assert queries.field_catalog(con).set_index("name").loc["site", "n_cases"] == 1
