"""Planted failure slices for the failure-slice tests (this module holds no tests).

``plant_scanner_failure`` adds a categorical ``scanner`` field (``case_field``, source 'manifest') to a
synthetic store (``synthetic_store.build_synthetic_store``) and lowers one class's true Dice on the
cases of one scanner: a subgroup defined by a column the model never saw. ``null_inputs`` builds
``SliceInputs`` without any effect (metadata, Dice and masses independent), for simulated nulls.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from agg2exp_core import store
from agg2exp_core.analysis.slices import SliceInputs
from agg2exp_core.store.queries import fetch
from agg2exp_core.vocabulary import AVERAGE_TARGET

SCANNERS = np.array(["A", "B", "C"], dtype=object)


def plant_scanner_failure(path: str | Path, class_name: str, drop: float, scanner: str = "B",
                          dataset: str | None = "reference", seed: int = 0) -> list[str]:
    """Give every case a scanner (A/B/C at random), lower ``class_name``'s Dice by ``drop`` on the
    ``scanner`` cases of ``dataset`` (None: all); return the affected case ids, sorted."""
    rng = np.random.default_rng(seed)
    with store.open_writer(path) as con:
        cases = fetch(con, "SELECT case_id, dataset FROM cases ORDER BY case_id")
        scanners = rng.choice(SCANNERS, size=len(cases))
        fields = pd.DataFrame({"case_id": cases.case_id, "name": "scanner", "kind": "categorical", "value": scanners,
                               "number": np.nan, "source": "manifest"})
        con.register("_fields", fields)
        con.execute("INSERT OR REPLACE INTO case_field SELECT * FROM _fields")
        con.unregister("_fields")
        hit = (scanners == scanner) & ((cases.dataset == dataset).to_numpy() if dataset else True)
        affected = sorted(cases.case_id[hit])
        class_id = fetch(con, "SELECT roi_id FROM rois WHERE name = ?", [class_name]).roi_id.iloc[0]
        con.execute("UPDATE dice SET dice = greatest(dice - ?, 0) WHERE class_id = ? AND case_id IN "
                    "(SELECT unnest(?::VARCHAR[]))", [drop, int(class_id), affected])
    return affected


def null_metadata(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Realistic case metadata: categorical, numeric and set-valued fields, a few missing values."""
    frame = pd.DataFrame({
        "dataset": rng.choice(["reference", "external"], n, p=[0.7, 0.3]),
        "split": rng.choice(["train", "test"], n), "sex": rng.choice(["F", "M"], n),
        "age": np.round(rng.normal(58, 15, n)), "scanner": rng.choice(list(SCANNERS), n),
        "site": rng.choice(["north", "south", "east", "west"], n), "slice_thickness": rng.choice([0.625, 1.25, 2.5, 5.0], n),
        "bmi": rng.normal(26, 4, n),
        "pathologies": [";".join(p for p, on in (("pleural_effusion", a), ("consolidation", b)) if on)
                        for a, b in zip(rng.random(n) < 0.2, rng.random(n) < 0.15)]})
    frame.loc[rng.choice(n, max(1, n // 30), replace=False), ["sex", "age"]] = None
    return frame


def skewed_dice(shape, rng: np.random.Generator) -> np.ndarray:
    """Dice as a segmentation model gives it: mostly near 0.9, a few failures near 0.3 (heavy left tail)."""
    good = np.clip(rng.beta(40, 5, shape), 0, 1)
    failed = rng.random(shape) < 0.05
    return np.where(failed, rng.beta(3, 6, shape), good)


def null_inputs(n: int, classes: int, seed: int, labelled: bool = True) -> SliceInputs:
    """SliceInputs with no effect: metadata, Dice (true or expected) and masses drawn independently."""
    rng = np.random.default_rng(seed)
    class_ids = list(range(1, classes + 1))
    dice = pd.DataFrame(skewed_dice((n, classes), rng), columns=class_ids)
    dice[AVERAGE_TARGET] = dice[class_ids].mean(axis=1)
    empty = pd.DataFrame(index=range(n))
    targets = [0] + class_ids
    lift = np.exp(rng.normal(0, 0.5, size=(n, len(targets), len(targets))))
    names = {t: f"class{t}" for t in targets}
    return SliceInputs([f"case{i:03d}" for i in range(n)], null_metadata(n, rng), dice if labelled else empty,
                       empty if labelled else dice, lift, targets, targets, names)
