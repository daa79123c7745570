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
