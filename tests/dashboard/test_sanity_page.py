"""The Methods page's sanity checks: one curve per method with its baseline band, pass counts per class,
the verdict table and the report's provenance line, on stored rows with known numbers."""
from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.analysis.sanity import COLUMNS
from apptest import charts, open_app, texts
from dashboard import data
from dashboard.filters import CohortFilter
from dashboard.report import build as report

# per run: class -> (similarity at steps 0, 1, 4 of the cascade; baseline); a class passes below its baseline
PLANTED = {"vg": {"aorta": ((1.0, 0.8, 0.1), 0.4), "heart": ((1.0, 0.7, 0.2), 0.5), "trachea": ((1.0, 0.9, 0.6), 0.3)},
           "smoothgrad": {"aorta": ((1.0, 0.95, 0.9), 0.4), "heart": ((1.0, 0.9, 0.8), 0.5),
                          "trachea": ((1.0, 0.5, 0.2), 0.3)}}
STEPS = (0, 1, 4)


def _rows(run_id: str, roi_ids: dict[str, int], planted: dict) -> pd.DataFrame:
    rows = []
    for name, (values, baseline) in planted.items():
        for step, value in zip(STEPS, values):
            for metric in ("spearman_abs", "ssim"):
                scale = 1.0 if metric == "spearman_abs" else 0.5  # SSIM: half the Spearman, the same verdicts
                rows.append(["c0", roi_ids[name], "mprt", step, "" if step == 0 else f"layer{step}", metric,
                             value * scale if step else 1.0, baseline * scale,
                             None if step == 0 else value < baseline])
        rows.append(["c0", roi_ids[name], "edge", 0, "sobel", "spearman_abs", 0.6, 0.5, False])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.assign(run_id=run_id)[["run_id"] + COLUMNS]


@pytest.fixture(scope="module")
def checked_store(tmp_path_factory):
    from synthetic_store import build_synthetic_store

    built = build_synthetic_store(tmp_path_factory.mktemp("sanity") / "store.duckdb", n_cases=8,
                                  with_artifacts=False, run_methods=("vg", "smoothgrad"), eval_methods=())
    with store.open_writer(built["path"]) as con:
        for method, planted in PLANTED.items():
            store.replace_table_rows(con, "sanity_check", built["run_ids"][method],
                                     _rows(built["run_ids"][method], built["roi_ids"], planted))
    return built


def _array(value) -> list:
    """A trace array as Plotly serialises it: a list, or base64-packed ``{"dtype", "bdata"}``."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return list(value)


def _sanity_traces(app) -> dict:
    """The sanity figure's traces by name, with x and y as lists."""
    spec = next(json.loads(c.proto.spec) for c in charts(app) if "randomisation" in c.proto.spec)
    return {t["name"]: SimpleNamespace(x=_array(t["x"]), y=_array(t["y"])) for t in spec["data"]}


def test_methods_page_draws_one_curve_per_method_with_its_pass_count(monkeypatch, checked_store):
    app = open_app(monkeypatch, checked_store["path"], "methods")
    traces = _sanity_traces(app)
    vg, sg = "Vanilla Gradient · 2 of 3 classes pass", "SmoothGrad · 1 of 3 classes pass"
    assert set(traces) == {vg, sg, f"{vg}: baseline", f"{sg}: baseline"}
    assert list(traces[vg].x) == pytest.approx([0, 0.25, 1]) and list(traces[sg].x) == pytest.approx([0, 0.25, 1])
    assert list(traces[vg].y) == pytest.approx([1.0, 0.8, 0.3])          # means over the classes at each step
    assert list(traces[sg].y) == pytest.approx([1.0, 0.7833333, 0.6333333])
    assert min(traces[f"{vg}: baseline"].y) == pytest.approx(0.3)  # the classes' baseline range
    assert max(traces[f"{vg}: baseline"].y) == pytest.approx(0.5)
    table = next(d.value for d in app.dataframe if "verdict" in d.value.columns)
    randomisation = table[table.check == "cascading model randomisation"].set_index(["method", "class"])
    assert randomisation.loc[("Vanilla Gradient", "trachea"), "verdict"] == "FAIL"
    assert randomisation.loc[("SmoothGrad", "trachea"), "verdict"] == "pass"
    assert randomisation.loc[("Vanilla Gradient", "aorta"), "value"] == pytest.approx(0.1)
    assert (table[table.check == "edge detector (Sobel)"].verdict == "FAIL").all() and len(table) == 12
    app.selectbox(key="sanity_metric").set_value("ssim").run()
    traces = _sanity_traces(app)
    assert list(traces[vg].y) == pytest.approx([1.0, 0.4, 0.15])         # SSIM rows: their own numbers


def test_methods_page_without_checks_says_how_to_compute_them(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "methods")
    assert any("agg2exp_core sanity" in t for t in texts(app, "caption"))
    assert not any("randomisation" in c.proto.spec for c in charts(app))


def test_report_provenance_summarises_the_runs_checks(checked_store):
    ref = data.store_ref(checked_store["path"])
    request = report.ReportRequest(run_id=checked_store["run_ids"]["vg"], cohort=CohortFilter(), target="heart")
    provenance = dict(report.provenance_preview(ref, request).values.tolist())
    assert provenance["sanity checks"] == ("cascading model randomisation: 2 of 3 classes pass; edge detector "
                                           "(Sobel): 0 of 3 classes pass (Spearman of |attribution|, 1 case(s))")
