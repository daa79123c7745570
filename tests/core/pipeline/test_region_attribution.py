"""The per-region mean attribution (the published CSV's ``_mean`` columns), imported and computed by precompute;
and ``analyze`` with every analysis on a real (tiny) precompute run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.aggregate import region_mean_attribution
from agg2exp_core.cli import main
from agg2exp_core.errors import InputError
from agg2exp_core.pipeline.importer import import_agg2exp_csv

from conftest import TSV2_CSV
from tests.core.pipeline.test_precompute import tiny  # noqa: F401 - the tiny phantom cohort and network


def test_region_mean_attribution_known_answer():
    attributions = np.array([[[1.0, -3.0], [2.0, 0.0]]])        # one class, a 2 x 2 "volume"
    labels = np.array([[0, 1], [1, 1]])
    means = region_mean_attribution(attributions, labels, 3)
    assert means[0, 0] == pytest.approx(1.0) and means[0, 1] == pytest.approx(5.0 / 3) and np.isnan(means[0, 2])


def test_the_published_means_are_stored_beside_the_masses(tsv2_store):
    frame = pd.read_csv(TSV2_CSV, dtype={"patient": str})
    with store.connect(tsv2_store["path"], read_only=True) as con:
        rows = con.execute("SELECT r.case_id, a.name AS a, b.name AS b, r.mean_attribution FROM region_attribution r "
                           "JOIN rois a ON a.roi_id = r.target_id JOIN rois b ON b.roi_id = r.source_id "
                           "WHERE r.run_id = ?", [tsv2_store["run_id"]]).df()
    assert len(rows) == 32 * 17 * 17
    row = rows[(rows.case_id == frame.patient.iloc[3]) & (rows.a == "heart") & (rows.b == "aorta")].iloc[0]
    assert row.mean_attribution == pytest.approx(frame["heart_explanation_in_aorta_mean"].iloc[3])
    vertebrae = rows[(rows.a == "vertebrae") & (rows.b == "vertebrae")]                 # 'vertebraes' in the file
    assert len(vertebrae) == 32


def test_partial_or_negative_means_are_refused_in_one_line(tmp_path):
    frame = pd.read_csv(TSV2_CSV, dtype={"patient": str})
    broken = frame.drop(columns=["heart_explanation_in_aorta_mean"])
    broken.to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(InputError, match="missing column 'heart_explanation_in_aorta_mean'"):
        import_agg2exp_csv(tmp_path / "partial.csv", tmp_path / "a.duckdb")
    frame.loc[0, "heart_explanation_in_aorta_mean"] = -1.0
    frame.to_csv(tmp_path / "negative.csv", index=False)
    with pytest.raises(InputError, match="negative mean attribution"):
        import_agg2exp_csv(tmp_path / "negative.csv", tmp_path / "b.duckdb")
    assert not (tmp_path / "a.duckdb").exists() and not (tmp_path / "b.duckdb").exists()


@pytest.mark.slow
def test_precompute_writes_region_means_and_analyze_runs_everything(tiny, capsys):  # noqa: F811
    from agg2exp_core.pipeline.precompute import precompute

    root, manifest, checkpoint = tiny
    db = root / "regions.duckdb"
    summary = precompute(manifest, checkpoint, db, "vg", progress=False)
    with store.connect(db, read_only=True) as con:
        means = con.execute("SELECT case_id, target_id, source_id, mean_attribution FROM region_attribution").df()
        masses = con.execute("SELECT case_id, target_id, source_id, mass_abs FROM local_importance").df()
        path = con.execute("SELECT path FROM artifacts WHERE case_id = ?", [summary.done[0]]).fetchone()[0]
    case = summary.done[0]
    with np.load(db.parent / path) as arrays:
        voxels = np.bincount(arrays["pred"].ravel(), minlength=17)
    joined = means[means.case_id == case].merge(masses, on=["case_id", "target_id", "source_id"])
    joined = joined[joined.mass_abs > 0]
    # mean |e_a| over region b times its voxels, over the mass fraction of b: ||e_a||_1, the same for every b
    total = joined.mean_attribution * voxels[joined.source_id] / joined.mass_abs
    spread = total.groupby(joined.target_id).agg(lambda t: t.max() / t.min())
    assert len(spread) >= 5 and np.allclose(spread, 1.0, rtol=1e-4)
    assert main(["analyze", "--db", str(db), "--fit-dataset", "reference", "--drift-reference", "reference",
                 "--bootstrap", "50", "--drift-permutations", "99"]) == 0
    out = capsys.readouterr().out
    assert "expected Dice: skipped (too few labelled reference cases" in out     # 1 held-out reference case
    assert "drift of external vs reference" in out and "outlier reasons:" in out
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM outlier_reasons").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM bootstrap_ci WHERE cohort = '*'").fetchone()[0] > 0
