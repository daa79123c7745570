"""case_uncertainty rows for tests, until precompute writes them (branch qc-features): a planted
test-time-augmentation agreement that tracks the true Dice, and an uninformative entropy."""
from __future__ import annotations

import numpy as np
import pandas as pd


def planted_uncertainty(dice: pd.DataFrame, model_sha256: str, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Rows ``model_sha256, case_id, class_id, feature, value`` from ``dice`` (case_id, class_id, dice):
    ``tta_dice`` = Dice + N(0, noise) (informative), ``entropy`` ~ U(0, 1) (noise)."""
    rng = np.random.default_rng(seed)
    known = dice[dice.dice.notna()]
    agreement = known.assign(feature="tta_dice", value=np.clip(known.dice + rng.normal(0, noise, len(known)), 0, 1))
    entropy = known.assign(feature="entropy", value=rng.uniform(0, 1, len(known)))
    rows = pd.concat([agreement, entropy], ignore_index=True).assign(model_sha256=model_sha256)
    return rows[["model_sha256", "case_id", "class_id", "feature", "value"]]


def write_uncertainty(con, rows: pd.DataFrame) -> None:
    con.register("_uncertainty", rows)
    con.execute("INSERT OR REPLACE INTO case_uncertainty SELECT * FROM _uncertainty")
    con.unregister("_uncertainty")


def quality_store(synthetic_store: dict, folder) -> dict:
    """A copy of the synthetic store (with its artefacts) whose vg run has planted uncertainty rows and
    the quality analysis (fitted on 'reference', flags below 0.8): ``path``, ``run_id``, ``report``."""
    import shutil

    from agg2exp_core import store
    from agg2exp_core.analysis import quality

    path = folder / "store.duckdb"
    shutil.copyfile(synthetic_store["path"], path)
    shutil.copytree(synthetic_store["artifact_root"], folder / "artifacts")
    run_id = synthetic_store["run_ids"]["vg"]
    with store.open_writer(path) as con:
        model = store.run_model(con, run_id)
        dice = con.execute("SELECT case_id, class_id, dice FROM dice WHERE model_sha256 = ?", [model]).df()
        write_uncertainty(con, planted_uncertainty(dice, model, noise=0.01))
        report = quality.analyze_quality(con, run_id, quality.QualityConfig(fit_dataset="reference"))
    return {**synthetic_store, "path": path, "run_id": run_id, "report": report}
