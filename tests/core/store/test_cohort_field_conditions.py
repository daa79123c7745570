"""CohortFilter's field conditions: parameterised SQL on case_field (names and values stay data)."""
from __future__ import annotations

import duckdb
import pytest

from agg2exp_core.store.queries.cohort import CohortFilter, FieldCondition, where_clause
from agg2exp_core.store.schema import init_schema

INJECTION = "x' OR '1'='1"
NAME_INJECTION = "scanner' OR 1=1; DROP TABLE cases; --"


@pytest.fixture
def con():
    con = duckdb.connect()
    init_schema(con)
    con.execute("INSERT INTO cases(case_id, dataset) SELECT 'c' || i, 'r' FROM range(6) t(i)")
    con.execute("""INSERT INTO case_field VALUES
        ('c0', 'scanner', 'categorical', 'A', NULL, 'manifest'),
        ('c1', 'scanner', 'categorical', 'B', NULL, 'manifest'),
        ('c2', 'scanner', 'categorical', 'B', NULL, 'manifest'), ('c3', 'scanner', 'categorical', ?, NULL, 'manifest'),
        ('c0', 'thick', 'numeric', '1', 1, 'dicom'), ('c1', 'thick', 'numeric', '2.5', 2.5, 'dicom'),
        ('c2', 'thick', 'numeric', '5', 5, 'dicom'), ('c4', 'thick', 'numeric', '3', 3, 'dicom')""", [INJECTION])
    return con


def ids(con, cohort: CohortFilter) -> list[str]:
    condition, params = where_clause(cohort, "c")
    return [r[0] for r in con.execute(f"SELECT case_id FROM cases c WHERE {condition} ORDER BY case_id",
                                      params).fetchall()]


@pytest.mark.parametrize("fields, expected", [
    ((FieldCondition("scanner", values=("B",)),), ["c1", "c2"]),
    ((FieldCondition("scanner", values=("A", "B")),), ["c0", "c1", "c2"]),     # cases without a scanner left out
    ((FieldCondition("scanner", values=()),), []),
    ((FieldCondition("thick", low=2.0, high=4.0),), ["c1", "c4"]),             # closed range
    ((FieldCondition("thick", low=2.5),), ["c1", "c2", "c4"]),
    ((FieldCondition("thick", high=2.5),), ["c0", "c1"]),
    ((FieldCondition("thick"),), ["c0", "c1", "c2", "c4"]),                    # no bounds: recorded
    ((FieldCondition("scanner", values=("B",)), FieldCondition("thick", high=3.0)), ["c1"]),   # AND
    ((FieldCondition("no_such_field", values=("B",)),), []),
])
def test_field_conditions_select_the_right_cases(con, fields, expected):
    assert ids(con, CohortFilter(fields=fields)) == expected


def test_fields_combine_with_the_case_columns(con):
    con.execute("UPDATE cases SET sex = 'F' WHERE case_id IN ('c1', 'c4')")
    assert ids(con, CohortFilter(sexes=("F",), fields=(FieldCondition("thick", low=2.0),))) == ["c1", "c4"]


def test_injection_in_a_field_name_or_value_stays_data(con):
    condition, params = where_clause(CohortFilter(fields=(FieldCondition(NAME_INJECTION, values=(INJECTION,)),
                                                          FieldCondition("scanner", values=(INJECTION,)))))
    assert INJECTION not in condition and NAME_INJECTION not in condition and INJECTION in params
    assert ids(con, CohortFilter(fields=(FieldCondition("scanner", values=(INJECTION,)),))) == ["c3"]
    assert ids(con, CohortFilter(fields=(FieldCondition(NAME_INJECTION, values=("A",)),))) == []
    assert con.execute("SELECT count(*) FROM cases").fetchone()[0] == 6


def test_a_filter_with_an_empty_selection_says_so():
    assert CohortFilter(fields=(FieldCondition("scanner", values=()),)).is_empty_selection
    assert not CohortFilter(fields=(FieldCondition("thick", low=1.0),)).is_empty_selection
