"""The Quality page on a synthetic store with planted uncertainty and the quality analysis: the flagged
list, the contributions of the selected cell, expected vs true Dice, risk-coverage and the ablation."""
from __future__ import annotations

import duckdb
import numpy as np
import plotly.io as pio
import pytest

from apptest import charts, open_app, texts
from uncertainty_rows import quality_store

pytestmark = pytest.mark.slow   # builds a store and runs the analysis with its ablation (> 15 s on 2 cores)


@pytest.fixture(scope="module")
def qc(synthetic_store, tmp_path_factory):
    return quality_store(synthetic_store, tmp_path_factory.mktemp("quality-page"))


def stored(qc, sql: str, params=()):
    with duckdb.connect(str(qc["path"]), read_only=True) as con:
        return con.execute(sql, list(params)).df()


def figure(app, title_start: str):
    for chart in charts(app):
        fig = pio.from_json(chart.proto.spec)
        if fig.layout.title.text and fig.layout.title.text.startswith(title_start):
            return fig
    raise AssertionError(f"no figure titled {title_start!r}")


def test_quality_page_shows_flags_contributions_and_curves(monkeypatch, qc):
    app = open_app(monkeypatch, qc["path"], "quality", {"run": qc["run_id"]})
    assert app.title[0].value == "Quality" and not app.error
    flagged = stored(qc, "SELECT case_id, class_id, estimate FROM dice_estimate WHERE run_id = ? AND likely_failure "
                         "AND class_id >= 0 ORDER BY estimate, case_id, class_id", [qc["run_id"]])
    assert len(flagged) > 0
    table = app.dataframe[0].value
    assert table.case_id.tolist() == flagged.case_id.tolist()
    assert np.allclose(table.estimate, flagged.estimate) and (table.estimate < 0.8).all()
    # the first flagged cell's contributions, largest first
    first = flagged.iloc[0]
    terms = stored(qc, "SELECT feature, contribution FROM quality_contribution WHERE run_id = ? AND case_id = ? "
                       "AND class_id = ? ORDER BY abs(contribution) DESC, feature",
                   [qc["run_id"], first.case_id, int(first.class_id)])
    bars = figure(app, "Why flagged")
    assert list(bars.data[0].y)[::-1] == terms.feature.tolist()
    assert np.allclose(list(bars.data[0].x)[::-1], terms.contribution)
    # expected vs true: every labelled cell of the run's cases, flagged ones as their own trace
    scatter = figure(app, "Expected vs true Dice")
    n_labelled = stored(qc, "SELECT count(*) AS n FROM dice_estimate e JOIN dice d USING (case_id, class_id) "
                            "WHERE e.run_id = ? AND e.class_id >= 0 AND d.dice IS NOT NULL", [qc["run_id"]]).n[0]
    assert sum(len(t.x) for t in scatter.data if t.name != "expected = true") == n_labelled
    # risk-coverage on the external cases: one trace per ranking, AURC in the legend = the stored ablation value
    curves = figure(app, "Risk-coverage · external")
    names = {t.name.split(" (AURC")[0]: t for t in curves.data}
    assert {"all", "uncertainty", "constant", "oracle", "random", "uncertainty: u_tta_dice"} <= set(names)
    aurc = stored(qc, "SELECT value FROM quality_ablation WHERE run_id = ? AND scope = 'external' AND metric = 'aurc' "
                      "AND feature_set = 'all'", [qc["run_id"]]).value[0]
    assert f"AURC {aurc:.4f}" in names["all"].name
    assert np.mean(names["oracle"].y) <= np.mean(names["all"].y) <= np.mean(names["random"].y)
    ablation = app.dataframe[-1].value
    assert ablation["feature set"].tolist()[:1] == ["all"] and "constant" in ablation["feature set"].tolist()
    row = ablation.set_index("feature set").loc["uncertainty"]
    assert row["Spearman (case mean)"] > 0.9 and row["MAE"] < 0.5 * row["MAE class means"]
    assert any("flagged (expected Dice < 0.8)" in c for c in texts(app, "caption"))


def test_quality_page_opens_the_flagged_case_in_the_case_viewer(monkeypatch, qc):
    app = open_app(monkeypatch, qc["path"], "quality", {"run": qc["run_id"]})
    case = app.dataframe[0].value.case_id.iloc[0]
    next(b for b in app.button if b.label == "Open in case viewer").click().run()
    assert app.title[0].value == "Case viewer" and app.query_params["case"] == case


def test_quality_page_without_estimates_says_how_to_compute_them(monkeypatch, synthetic_store):
    app = open_app(monkeypatch, synthetic_store["path"], "quality", {"run": synthetic_store["run_ids"]["vg"]})
    assert any("has no expected Dice" in i for i in texts(app, "info"))
