"""case_field pivots to one typed column per field, in the asked case order."""
import duckdb
import numpy as np

from agg2exp_core.store import queries
from agg2exp_core.store.schema import init_schema


def _store():
    con = duckdb.connect()
    init_schema(con)
    con.execute("INSERT INTO cases(case_id, dataset) VALUES ('a', 'r'), ('b', 'r'), ('c', 'r')")
    con.execute("""INSERT INTO case_field VALUES
        ('a', 'scanner', 'categorical', 'B', NULL, 'manifest'), ('b', 'scanner', 'categorical', 'A', NULL, 'manifest'),
        ('a', 'bmi', 'numeric', '21.5', 21.5, 'manifest'), ('c', 'bmi', 'numeric', '30', 30, 'dicom')""")
    return con


def test_catalog_lists_each_field_once_with_kind_and_counts():
    catalog = queries.field_catalog(_store())
    assert catalog.name.tolist() == ["bmi", "scanner"]
    assert catalog.kind.tolist() == ["numeric", "categorical"]
    assert catalog.n_cases.tolist() == [2, 2]


def test_case_fields_are_typed_and_follow_the_asked_order():
    wide = queries.case_fields(_store(), ["c", "b", "a"])
    assert wide.case_id.tolist() == ["c", "b", "a"]
    np.testing.assert_array_equal(wide.bmi.to_numpy(), [30.0, np.nan, 21.5])
    assert wide.scanner.tolist()[1:] == ["A", "B"] and wide.scanner.isna().tolist() == [True, False, False]


def test_a_store_without_fields_gives_only_case_ids():
    con = duckdb.connect()
    init_schema(con)
    con.execute("INSERT INTO cases(case_id, dataset) VALUES ('a', 'r')")
    assert queries.case_fields(con).columns.tolist() == ["case_id"]
