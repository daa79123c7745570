"""Seg-Grad-CAM and Guided Backprop through the cohort pipelines: precompute, evaluate, the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.analysis import evaluation as ev
from agg2exp_core.cli import main
from agg2exp_core.pipeline.evaluate import evaluate_cohort
from agg2exp_core.pipeline.precompute import precompute
from cohorts import fingerprint, tiny_phantom_cohort

CLASSES = [1, 2, 3, 5, 8]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradcam")
    manifest, checkpoint = tiny_phantom_cohort(root)
    return root, manifest, checkpoint


def _class_row_sums(db, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(sum of mass_abs over class sources, of mass_neg) per (case, target) of a run."""
    with store.connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT sum(mass_abs), sum(mass_pos) FROM local_importance l JOIN rois r ON r.roi_id = l.source_id "
            "WHERE r.is_class AND l.run_id = ? AND l.mass_abs IS NOT NULL GROUP BY case_id, target_id",
            [run_id]).fetchall()
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


@pytest.mark.parametrize("method", ["gradcam", "guided_backprop"])
def test_precompute_writes_rows_that_sum_to_one(tiny, method):
    root, manifest, checkpoint = tiny
    db = root / f"{method}.duckdb"
    summary = precompute(manifest, checkpoint, db, method, classes=CLASSES, progress=False, device="cpu")
    assert not summary.failed, summary.failed
    assert len(summary.done) == len(pd.read_csv(manifest))
    abs_sums, pos_sums = _class_row_sums(db, summary.run_id)
    assert len(abs_sums) >= len(summary.done)  # at least one predicted class per case
    np.testing.assert_allclose(abs_sums, 1.0, atol=1e-6)
    if method == "gradcam":  # non-negative maps: all mass is positive
        np.testing.assert_allclose(pos_sums, 1.0, atol=1e-6)
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT method FROM runs").fetchone()[0] == method


def test_precompute_refuses_a_bad_layer_before_touching_the_store(tiny, capfd):
    root, manifest, checkpoint = tiny
    db = root / "bad-layer" / "store.duckdb"
    db.parent.mkdir()
    code = main(["--threads", "1", "precompute", "--manifest", str(manifest), "--checkpoint", str(checkpoint),
                 "--db", str(db), "--method", "gradcam", "--params", '{"layer": "decoder.stages.9"}',
                 "--device", "cpu"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert "layer: no module named 'decoder.stages.9' in UNet (its top-level modules: model)" in err[0]
    assert fingerprint(db.parent) == {}


def test_evaluate_accepts_both_methods(tiny):
    root, manifest, checkpoint = tiny
    db = root / "evaluate.duckdb"
    config = ev.EvaluationConfig(metrics=("faithfulness", "complexity", "efficiency"),
                                 faithfulness=ev.FaithfulnessConfig(n_subsets=5))
    summary = evaluate_cohort(manifest, checkpoint, db, methods=("gradcam", "guided_backprop"),
                              classes=("heart", "aorta"), config=config, max_cases=1, progress=False,
                              device="cpu", method_params={"gradcam": {"layer": "model.1"}})
    assert not summary.failed and summary.done
    with store.connect(db, read_only=True) as con:
        rows = con.execute("SELECT r.method, e.metric, e.value FROM method_eval e JOIN runs r USING (run_id)").df()
    assert set(rows.method) == {"gradcam", "guided_backprop"}
    assert {"faithfulness", "complexity", "efficiency_s"} <= set(rows.metric)
    assert rows.value.notna().any()
