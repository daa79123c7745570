"""The report shows the numbers the pages show: its tables against the tables of the Heat map, Class
distributions and Outliers pages run on the same store, run and cohort filter, and its heat map carries
the page's intervals and dendrograms."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from apptest import charts, open_app
from dashboard import data, report
from dashboard.filters import CohortFilter

COHORT = CohortFilter(datasets=("external",), sexes=("F",))


@pytest.fixture(scope="module")
def shown(synthetic_store):
    ref = data.store_ref(synthetic_store["path"])
    run_id = synthetic_store["run_ids"]["vg"]
    request = report.ReportRequest(run_id=run_id, cohort=COHORT, target="heart", order="cluster")
    params = {"run": run_id, "dataset": "external", "sex": "F", "target": "heart", "order": "cluster"}
    return report.build_report(ref, request), params


def _heatmap(chart) -> dict:
    spec = json.loads(chart.proto.spec)
    return next(t for t in spec["data"] if t["type"] == "heatmap")


def test_the_reports_heat_map_is_the_pages(monkeypatch, synthetic_store, shown):
    rep, params = shown
    app = open_app(monkeypatch, synthetic_store["path"], "heat_map", params)
    page_table = app.dataframe[0].value                           # "Values as a table": one row per cell
    page_table = page_table.rename(columns={page_table.columns[2]: "mass"})    # named by the mass kind
    wide = rep.tables["heat_map_values"]
    long = wide.melt(id_vars=wide.columns[0], var_name="source", value_name="mass").rename(
        columns={wide.columns[0]: "target"})
    merged = page_table.merge(long, on=["target", "source"], suffixes=("_page", "_report"))
    assert len(merged) == len(page_table) == wide.shape[0] * (wide.shape[1] - 1)
    np.testing.assert_allclose(merged.mass_page.to_numpy(float), merged.mass_report.to_numpy(float))
    page_heat = _heatmap(charts(app)[0])
    report_figure = rep.figures["heat_map"]
    report_heat = json.loads(report_figure.to_json())["data"][0]
    assert report_heat["hovertemplate"] == page_heat["hovertemplate"] and "95 % CI" in report_heat["hovertemplate"]
    assert report_heat["customdata"] == page_heat["customdata"]   # names, n, interval of every cell
    assert sum(t.mode == "lines" for t in report_figure.data if t.type == "scatter") == 2   # the dendrograms


def test_the_reports_distributions_and_ranking_are_the_pages(monkeypatch, synthetic_store, shown):
    rep, params = shown
    boxes = open_app(monkeypatch, synthetic_store["path"], "class_distributions", params)
    page_summary = boxes.dataframe[0].value.reset_index(drop=True)
    pd.testing.assert_frame_equal(page_summary, rep.tables["class_distribution_summary"], check_dtype=False)
    ranked = open_app(monkeypatch, synthetic_store["path"], "outliers", params)
    page_ranking = ranked.dataframe[0].value.reset_index(drop=True)
    report_ranking = rep.tables["outlier_ranking"]
    columns = list(report_ranking.columns)
    pd.testing.assert_frame_equal(page_ranking[columns].head(len(report_ranking)), report_ranking, check_dtype=False)
