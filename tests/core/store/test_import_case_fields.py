"""import-agg2exp --metadata: the metadata CSV's other columns become the imported cases' fields."""
from __future__ import annotations

from pathlib import Path

from agg2exp_core import store
from agg2exp_core.pipeline.importer import import_agg2exp_csv
from agg2exp_core.store import queries

PUBLISHED = (Path(__file__).resolve().parents[3] / "data" / "agg2exp-tsv2"
             / "tsv2_test_aggregated_sg_explanations_with_dice.csv")


def test_metadata_columns_of_an_import_land_as_fields(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("case_id,sex,age,scanner,kvp\ns0029,F,61,B,120\ns0040,,,A,\nnot_imported,M,50,C,100\n")
    db = tmp_path / "s.duckdb"
    import_agg2exp_csv(PUBLISHED, db, metadata=meta)
    with store.connect(db, read_only=True) as con:
        rows = con.execute("SELECT case_id, name, kind, number FROM case_field ORDER BY ALL").fetchall()
        catalog = queries.field_catalog(con).set_index("name")
    assert rows == [("s0029", "kvp", "numeric", 120.0), ("s0029", "scanner", "categorical", None),
                    ("s0040", "scanner", "categorical", None)]
    assert catalog.loc["scanner", "n_values"] == 2 and catalog.loc["kvp", "source"] == "manifest"
