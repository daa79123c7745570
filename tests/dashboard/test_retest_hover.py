"""The heat map flags the cells whose value depends on SmoothGrad's seed (test-retest ICC < 0.75)."""
from __future__ import annotations

import shutil

import duckdb
import plotly.io as pio

from apptest import charts, open_app, texts


def test_cells_below_the_reliable_icc_are_flagged_in_the_hover_caption_and_csv(monkeypatch, synthetic_store,
                                                                                  tmp_path):
    path = tmp_path / "store.duckdb"
    shutil.copyfile(synthetic_store["path"], path)
    run_id = synthetic_store["run_ids"]["smoothgrad"]
    heart, aorta = synthetic_store["roi_ids"]["heart"], synthetic_store["roi_ids"]["aorta"]
    with duckdb.connect(str(path)) as con:      # as the retest stage writes them: ICC 0.9, one cell 0.4
        con.execute("""INSERT INTO retest_icc SELECT DISTINCT run_id, 'smoothgrad_seed', 'abs', target_id, source_id,
                       CASE WHEN target_id = ? AND source_id = ? THEN 0.4 ELSE 0.9 END, 8, 2
                       FROM local_importance WHERE run_id = ?""", [heart, aorta, run_id])
        n_cells = con.execute("SELECT count(*) FROM retest_icc").fetchone()[0]
    app = open_app(monkeypatch, path, "heat_map", {"run": run_id})
    assert not app.error
    heat = next(t for c in charts(app) for t in pio.from_json(c.proto.spec).data
                if t.type == "heatmap" and "test-retest ICC" in (t.hovertemplate or ""))
    cells = {(row[0], row[1]): row[-1] for line in heat.customdata for row in line}
    assert cells[("heart", "aorta")].startswith("0.40 ⚠ below 0.75")
    assert cells[("aorta", "heart")] == "0.90"
    assert any(f"1 of {n_cells} cells have a test-retest ICC below 0.75 across 2 SmoothGrad seeds" in t
               for t in texts(app, "caption"))
    table = next(d.value for d in app.dataframe if "retest_icc" in d.value.columns)
    flagged = table[table.retest_icc < 0.75]
    assert flagged[["target", "source"]].values.tolist() == [["heart", "aorta"]]


def test_a_run_without_retest_rows_shows_no_icc(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "heat_map", {"run": synthetic_store["run_ids"]["vg"]})
    assert not app.error
    assert not any("test-retest" in (t.hovertemplate or "") for c in charts(app) for t in pio.from_json(c.proto.spec).data)
    assert not any("test-retest" in t for t in texts(app, "caption"))
