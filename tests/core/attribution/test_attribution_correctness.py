"""Correctness found by the outside review (issue 15): KernelSHAP's class count with a mask,
Dice of a class predicted but absent from the truth, the case spacing of mm partitions
in precompute, efficiency per volume and per class. (``context_mass`` with a class
subset: test_aggregate.py; NaN permutations: test_compare.py.)"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from agg2exp_core.analysis.evaluation import EvaluationConfig, evaluate_case
from agg2exp_core.analysis.outliers import spearman_table
from agg2exp_core.attribution.kernelshap import kernelshap_explain
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models import Segmenter, WindowSpec, dice_per_class
from agg2exp_core.pipeline.precompute import precompute
from cohorts import make_checkpoint, make_volume, write_nifti

WEIGHTS = (1.0, 2.0, -1.0, 0.5)  # four classes


def four_class_model(x: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, 4, *S]``: class c = WEIGHTS[c] * x (a plain callable, no label names)."""
    return torch.cat([w * x for w in WEIGHTS], dim=1)


def image_and_mask():
    image = torch.rand(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    mask = (image[0] > 0.5).long()  # only classes 0 and 1 appear: the top classes are absent
    return image, mask


def test_kernelshap_with_a_mask_explains_every_class_of_the_model():
    image, mask = image_and_mask()
    params = {"partition": "cubes", "n_per_axis": 2, "n_coalitions": 2 ** 8, "mask": mask}
    full = kernelshap_explain(four_class_model, image, **params)
    assert full.shape == (len(WEIGHTS), 4, 4, 4), "one row per model class, as the contract says"
    assert torch.count_nonzero(full[2:]) == 0, "absent classes (empty masks) get zeros"
    present = kernelshap_explain(four_class_model, image, classes=[0, 1], **params)
    torch.testing.assert_close(full[:2], present)
    assert torch.count_nonzero(present) > 0


def test_kernelshap_with_a_mask_and_a_segmenter_counts_its_label_names():
    image, mask = image_and_mask()
    net = torch.nn.Conv3d(1, len(WEIGHTS), 1)
    model = Segmenter(net, {}, [f"c{i}" for i in range(len(WEIGHTS))], Preprocessing(spacing=None),
                      WindowSpec(roi_size=(4, 4, 4)))
    out = kernelshap_explain(model, image, partition="cubes", n_per_axis=2, n_coalitions=16, mask=mask)
    assert out.shape[0] == len(WEIGHTS)


def test_dice_counts_a_class_predicted_but_absent_from_the_truth_as_zero():
    label = torch.tensor([0, 1, 1, 0, 0, 0]).reshape(6, 1, 1)
    pred = torch.tensor([0, 1, 1, 2, 2, 0]).reshape(6, 1, 1)  # class 2: false positive; class 3: nowhere
    dice = dice_per_class(pred, label, 4)
    np.testing.assert_allclose(dice[:3], [2 * 2 / (2 + 4), 1.0, 0.0])
    assert np.isnan(dice[3]), "absent from both truth and prediction: nothing to score"
    # so the Spearman analysis sees the false-positive case instead of dropping it
    anomaly = pd.DataFrame({"case_id": list("abcd"), "target_id": 2, "score": [0.1, 0.2, 0.3, 0.9]})
    dices = pd.DataFrame({"case_id": list("abcd"), "target_id": 2, "dice": [0.9, 0.8, 0.7, dice[2]]})
    row = spearman_table(anomaly, dices, set("abcd"))
    assert row.loc[row.target_id == 2, "n"].item() == 4
    assert row.loc[row.target_id == 2, "spearman_rho"].item() == pytest.approx(-1.0)


def test_precompute_lays_out_mm_partitions_on_the_case_spacing(tmp_path, monkeypatch):
    """(Fixed with the restructure.) fcc/hybrid cells are in mm: the case's spacing reaches the partition."""
    from agg2exp_core.attribution.kernelshap import game
    seen = []
    real = game.make_partition

    def spy(name, shape, spacing, **kw):
        seen.append((name, tuple(float(s) for s in spacing)))
        return real(name, shape, spacing, **kw)

    monkeypatch.setattr(game, "make_partition", spy)
    hu, label = make_volume(0)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    write_nifti(tmp_path / "ct.nii.gz", hu, affine)
    write_nifti(tmp_path / "seg.nii.gz", label, affine)
    (tmp_path / "m.csv").write_text("case_id,image,label\nc0,ct.nii.gz,seg.nii.gz\n")
    summary = precompute(tmp_path / "m.csv", make_checkpoint(tmp_path / "m.pt"), tmp_path / "s.duckdb",
                         "kernelshap", {"partition": "fcc", "n_coalitions": 8}, classes=[1], device="cpu",
                         progress=False)
    assert summary.done == ["c0"], summary.line()
    assert seen == [("fcc", (2.0, 2.0, 3.0))]


def test_efficiency_is_reported_per_volume_and_per_class():
    """(Fixed with the restructure.) One explain call serves every class."""
    def slow_explain(model, image, classes=None, **_):
        time.sleep(0.05)
        return torch.ones(len(classes), *image.shape[1:])

    image = torch.rand(1, 4, 4, 4)
    metrics, _ = evaluate_case(four_class_model, image, {"m": {}}, [0, 1, 3],
                               EvaluationConfig(metrics=("efficiency",)), explain=slow_explain)
    wide = metrics.pivot_table(index="target_id", columns="metric", values="value")
    volume = wide.efficiency_volume_s
    assert volume.nunique() == 1 and volume.iloc[0] >= 0.05, "the same volume time for every class"
    np.testing.assert_allclose(wide.efficiency_s, volume / 3)
