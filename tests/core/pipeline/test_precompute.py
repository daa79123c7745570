"""End to end on a tiny phantom cohort: precompute -> store -> analyze, resumable, via the CLI too."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis.outliers import AnalysisConfig, analyze
from agg2exp_core.cli import main
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.models import build_network, save_checkpoint
from agg2exp_core.io.phantoms import generate_cohort
from agg2exp_core.pipeline.artifacts import largest_cross_sections
from agg2exp_core.pipeline.precompute import precompute

TINY_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    manifest = generate_cohort(root / "cohort", n_reference=3, n_test=1, n_external=3,
                               shape=(32, 24, 24), spacing=(12.0, 12.0, 12.0), seed=1)
    import torch
    torch.manual_seed(0)
    net = build_network(TINY_UNET, len(THORAX_LABELS))
    checkpoint = save_checkpoint(root / "tiny.pt", net, TINY_UNET, THORAX_LABELS, Preprocessing(spacing=None),
                                 roi_size=(32, 24, 24))
    return root, manifest, checkpoint


def test_precompute_fills_the_store_and_resumes(tiny):
    root, manifest, checkpoint = tiny
    db = root / "store.duckdb"
    summary = precompute(manifest, checkpoint, db, "vg", progress=False)
    assert len(summary.done) == 6 and not summary.failed
    again = precompute(manifest, checkpoint, db, "vg", progress=False)
    assert not again.done and len(again.skipped) == 6 and again.run_id == summary.run_id
    with store.connect(db, read_only=True) as con:
        rows = con.execute("SELECT count(*), count(DISTINCT case_id) FROM local_importance").fetchone()
        class_sums = con.execute(
            "SELECT sum(mass_abs) FROM local_importance l JOIN rois r ON r.roi_id = l.source_id "
            "WHERE r.is_class GROUP BY case_id, target_id").fetchall()
        pathologies = dict(con.execute("SELECT case_id, pathologies FROM cases").fetchall())
        artifact = con.execute("SELECT path FROM artifacts LIMIT 1").fetchone()[0]
        run = con.execute("SELECT method, model_sha256 FROM runs").fetchone()
        volumes = con.execute(  # the lift of every row, and class-region volume shares that sum to one
            "SELECT count(*) FILTER (WHERE mass_abs > 0 AND abs(mass_lift * volume_share - mass_abs) > 1e-9), "
            "count(*) FILTER (WHERE mass_abs > 0 AND mass_lift IS NULL), "
            "max(abs(s - 1)) FROM local_importance, (SELECT case_id AS c, target_id AS t, sum(volume_share) AS s "
            "FROM local_importance l JOIN rois r ON r.roi_id = l.source_id WHERE r.is_class GROUP BY 1, 2) "
            "WHERE case_id = c AND target_id = t").fetchone()
    assert volumes[0] == 0 and volumes[1] == 0 and volumes[2] < 1e-9
    assert rows[1] == 6 and rows[0] >= 6 * 17 * 17
    sums = np.array([s[0] for s in class_sums if s[0] is not None])
    np.testing.assert_allclose(sums, 1.0, atol=1e-6)  # class regions partition the volume
    assert any(p for p in pathologies.values()), "external phantoms carry pathology RoIs"
    with np.load(db.parent / artifact) as arrays:
        assert arrays["ct"].dtype == np.int16 and arrays["pred"].shape == (32, 24, 24)
        assert arrays["attr_1_z"].dtype == np.float32 and arrays["index_1"].shape == (3,)
        assert arrays["attrvol_1"].dtype == np.float32 and arrays["attrvol_block"].tolist() == [1, 1, 1]
        assert arrays["attrvol_1"].shape == (32, 24, 24)      # a 32 x 24 x 24 case needs no downsampling
    assert run[0] == "vg" and len(run[1]) == 64


def test_analyze_after_precompute(tiny):
    root, manifest, checkpoint = tiny
    db = root / "store.duckdb"
    precompute(manifest, checkpoint, db, "vg", progress=False)
    result = analyze(db, None, AnalysisConfig(fit_dataset="reference", fit_split="train"))
    assert result["n_fit"] == 2 and result["n_cases"] == 6


def test_cli_precompute_and_bad_input(tiny, tmp_path, capsys):
    root, manifest, checkpoint = tiny
    db = tmp_path / "cli.duckdb"
    assert main(["precompute", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--db", str(db),
                 "--method", "vg", "--cases", "ref-000,ext-000"]) == 0
    assert "2 computed" in capsys.readouterr().out
    before = db.read_bytes()
    assert main(["precompute", "--manifest", str(manifest), "--checkpoint", str(root / "missing.pt"),
                 "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.pt: checkpoint file not found" in err
    assert main(["precompute", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--db", str(db),
                 "--params", "{oops"]) == 2
    assert "--params: not valid JSON" in capsys.readouterr().err
    assert db.read_bytes() == before


def test_largest_cross_sections():
    mask = np.zeros((5, 6, 7), bool)
    mask[1, :, :] = True
    mask[3, 2, 4] = True
    assert largest_cross_sections(mask).tolist()[0] == 1
    assert largest_cross_sections(np.zeros((4, 6, 8), bool)).tolist() == [2, 3, 4]
