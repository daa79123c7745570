"""The Failure modes page on a synthetic store with a planted scanner failure of the heart: the ranked slices,
the Dice in and out, the cells that differ and the members (opening the Case viewer) are the stored ones."""
from __future__ import annotations

import base64
import shutil

import numpy as np
import plotly.io as pio
import pytest

from agg2exp_core import store
from agg2exp_core.analysis.slice_store import analyze_slices
from agg2exp_core.analysis.slices import SliceConfig
from agg2exp_core.store import queries
from apptest import charts, open_app, texts
from planted_slices import plant_scanner_failure


def numbers(values) -> np.ndarray:
    """A trace's numeric array as Plotly's JSON holds it (typed base64 or a plain list)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float)


@pytest.fixture(scope="module")
def sliced_store(synthetic_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sliced")
    path = folder / "store.duckdb"
    shutil.copyfile(synthetic_store["path"], path)
    shutil.copytree(synthetic_store["artifact_root"], folder / "artifacts")
    affected = plant_scanner_failure(path, "heart", drop=0.2, dataset=None)
    run_id = synthetic_store["run_ids"]["vg"]
    with store.open_writer(path) as con:
        analyze_slices(con, run_id, SliceConfig(exclude_split=None))
    with store.connect(path, read_only=True) as con:
        heart = queries.failure_slices(con, run_id, synthetic_store["roi_ids"]["heart"])
        top = int(heart.slice_id.iloc[0])
        dice = queries.failure_slice_dice(con, run_id, top)
        cells = queries.failure_slice_cells(con, run_id, top)
    return {**synthetic_store, "path": path, "run_id": run_id, "affected": affected, "heart": heart, "dice": dice,
            "cells": cells}


def test_failure_modes_page_shows_the_stored_slices_dice_cells_and_members(monkeypatch, sliced_store):
    app = open_app(monkeypatch, sliced_store["path"], "failure_modes",
                   {"run": sliced_store["run_id"], "slice_class": "heart"})
    assert app.title[0].value == "Failure modes" and not app.error
    heart = sliced_store["heart"]
    ranked = app.dataframe[0].value
    assert ranked.slice.tolist() == heart.description.tolist() and ranked.slice.iloc[0] == "scanner = B"
    assert ranked.n.tolist() == heart.n.tolist() and ranked["rank"].tolist() == list(range(1, len(heart) + 1))
    assert ranked["Dice drop"].tolist() == heart.effect.round(4).tolist()
    assert ranked.q.tolist() == pytest.approx(heart.q_value.tolist())
    strip, bars = (pio.from_json(c.proto.spec) for c in charts(app)[:2])
    inside, rest = sliced_store["dice"][sliced_store["dice"].in_slice], sliced_store["dice"][~sliced_store["dice"].in_slice]
    assert [len(numbers(t.y)) for t in strip.data] == [len(inside), len(rest)] == [len(sliced_store["affected"]), 60 - len(
        sliced_store["affected"])]
    assert sorted(numbers(strip.data[0].y)) == pytest.approx(sorted(inside.dice))
    assert "Slice: `scanner = B`" in [h.value for h in app.subheader]   # manifest values shown literally
    caption = next(c for c in texts(app, "caption") if c.startswith("Mean Dice"))
    assert f"{inside.dice.mean():.3f} in the slice (n = {len(inside)})" in caption
    assert list(numbers(bars.data[0].x)) == pytest.approx(sliced_store["cells"].difference.tolist())
    members = app.dataframe[-1].value
    assert members.case_id.tolist() == sliced_store["affected"]
    assert members.case_viewer.iloc[0] == f"case_viewer?case={sliced_store['affected'][0]}&target=heart"
    assert {"PNG", "SVG", "PDF", "CSV"} <= {b.proto.label for b in app.get("download_button")}
    case = app.selectbox(key="slice_case").value
    next(b for b in app.button if b.label == "Open in case viewer").click().run()
    assert app.title[0].value == "Case viewer" and app.query_params["case"] == case


def test_failure_modes_page_without_a_search_says_how(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "failure_modes")
    assert any("--slices" in t for t in texts(app, "info")) and not charts(app)


def test_report_has_the_failure_modes_of_its_class(sliced_store):
    from dashboard import data, report
    from dashboard.filters import CohortFilter

    request = report.ReportRequest(run_id=sliced_store["run_id"], cohort=CohortFilter(), target="heart",
                                   store_label="synthetic")
    built = report.build_report(data.store_ref(sliced_store["path"]), request)
    titles = [p.title for p in built.pages]
    assert titles[titles.index("Outliers: ranking") + 1] == "Failure modes: heart"
    assert built.tables["failure_slices"].slice.tolist() == sliced_store["heart"].description.tolist()
    assert built.tables["failure_slice_cells"].difference.tolist() == pytest.approx(
        sliced_store["cells"].difference.tolist())
    assert "failure_slice_dice" in built.figures
