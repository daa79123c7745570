"""A planted acquisition shift (scanner C: soft kernel) in phantoms segmented by the committed demo model
is recovered by the failure-slice search: the top slice of the ribs, with its members; the same cases
without the planting give no such slice. The full benchmark of the four types: benchmarks/failure_slices.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agg2exp_core.analysis.slice_recovery import recovery
from agg2exp_core.analysis.slices import SliceConfig, SliceInputs, search
from agg2exp_core.io.phantoms import planted
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.models.checkpoint import load_checkpoint
from agg2exp_core.models.segmenter import dice_per_class, predict_labels

MODEL = Path(__file__).resolve().parents[2] / "data" / "demo_unet.pt"
RIBS = THORAX_LABELS.index("ribs")
CLASSES = [RIBS, THORAX_LABELS.index("heart"), THORAX_LABELS.index("aorta")]

pytestmark = pytest.mark.slow      # 29 phantoms and predictions: ~25 s on an idle 2-core machine, 80 s on a busy one


def _dice(model, phantom) -> np.ndarray:
    image, _ = model.preprocessing.image(phantom.hu, phantom.affine)
    with torch.no_grad():
        labels = predict_labels(model.predict(image))
    return dice_per_class(labels, torch.as_tensor(phantom.labels.astype(np.int64)), model.n_classes)


def _inputs(cases: list[dict], dice: list[np.ndarray]) -> SliceInputs:
    metadata = pd.DataFrame([{k: c[k] for k in ("sex", "age", *planted.COLUMNS, "bmi")} for c in cases])
    table = pd.DataFrame(np.array(dice)[:, CLASSES], columns=CLASSES)
    return SliceInputs([c["case_id"] for c in cases], metadata, table, pd.DataFrame(index=table.index))


def test_scanner_c_is_the_ribs_top_slice_with_its_members_and_absent_without_the_planting():
    model = load_checkpoint(MODEL, "cpu")
    cases = [c for c in planted.planted_plan(n_reference=0, n_cases=24, seed=5) if c["dataset"] == "planted"]
    members = planted.planted_members(cases, "acquisition")
    assert len(members) == 5
    clean, shifted = [], []
    for case in cases:
        args = (case["seed"], case["sex"], case["age"])
        clean.append(_dice(model, planted.planted_phantom(*args)))
        hit = planted.failures_of(case, ("acquisition",))
        shifted.append(_dice(model, planted.planted_phantom(*args, failures=hit)) if hit else clean[-1])
    inside = np.isin([c["case_id"] for c in cases], sorted(members))
    ribs_clean, ribs_shifted = np.array(clean)[:, RIBS], np.array(shifted)[:, RIBS]
    assert ribs_shifted[inside].mean() < ribs_clean[inside].mean() - 0.1      # the planting lowers the ribs' Dice
    # single conditions: with 5 cases in a slice the rank-sum's smallest p (~4e-4, normal approximation)
    # cannot pass BH over the ~600 candidates that pairs of conditions make on 24 cases
    config = SliceConfig(min_support=5, max_conditions=1, cluster_counts=())
    found = recovery(search(_inputs(cases, shifted), config), RIBS, members)
    assert found.rank == 1 and found.precision >= 0.8 and found.recall >= 0.8, found
    assert "scanner" in found.description
    assert recovery(search(_inputs(cases, clean), config), RIBS, members).rank is None
