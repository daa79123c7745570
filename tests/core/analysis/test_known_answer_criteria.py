"""Criteria of the planted known answer (issue #25 b) on toy models whose answer is known exactly.

The toy network predicts fixed regions; its effusion logit reads the marker box with weight
``w_marker`` and its own voxels with weight ``w_local``. With the constant donor (0) the exact
Shapley value of the marker region is ``w_marker * n_effusion`` and that of the effusion region
``w_local * n_effusion`` (the game is additive), every other region 0, and so is each region's
causal effect: the lifts must rank the marker first exactly when ``w_marker > w_local``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agg2exp_core.analysis.known_answers import MARKER, region_lift, source_units
from agg2exp_core.io.phantoms.shortcut import EFFUSION_CLASS, SHORTCUT_LABELS

SHAPE = (8, 8, 8)


def _regions():
    labels = np.zeros(SHAPE, np.int64)
    labels[:4] = SHORTCUT_LABELS.index("lung_left")
    labels[:2, :3, :3] = EFFUSION_CLASS
    labels[6:, 6:, :2] = SHORTCUT_LABELS.index("heart")
    marker = np.zeros(SHAPE, bool)
    marker[7, 0, 7] = True
    return labels, marker


class Toy(torch.nn.Module):
    def __init__(self, labels: np.ndarray, marker: np.ndarray, w_marker: float, w_local: float):
        super().__init__()
        prior = torch.nn.functional.one_hot(torch.as_tensor(labels), len(SHORTCUT_LABELS)).permute(3, 0, 1, 2)
        self.register_buffer("prior", 100.0 * prior.float())
        self.marker = torch.as_tensor(marker)
        self.w_marker, self.w_local = w_marker, w_local

    def forward(self, x):
        logits = self.prior[None].repeat(len(x), 1, 1, 1, 1)
        marker_mean = x[:, 0][:, self.marker].mean(1)
        logits[:, EFFUSION_CLASS] += self.w_marker * marker_mean[:, None, None, None] + self.w_local * x[:, 0]
        return logits


def test_source_units_cut_the_marker_out_of_its_class():
    labels, marker = _regions()
    units, names = source_units(labels, marker, SHORTCUT_LABELS)
    assert names == ["background", "lung_left", "heart", "pleural_effusion", MARKER]
    assert (units[marker] == names.index(MARKER)).all() and (units[~marker] != names.index(MARKER)).all()
    assert sorted(np.unique(units)) == list(range(len(names)))


@pytest.mark.parametrize("method", ["kernelshap", "causal"])
def test_lift_is_the_region_value_and_ranks_the_planted_marker(method):
    labels, marker = _regions()
    units, names = source_units(labels, marker, SHORTCUT_LABELS)
    image = torch.ones((1, *SHAPE))
    shortcut = region_lift(Toy(labels, marker, 5.0, 1.0), image, units, method, EFFUSION_CLASS)
    control = region_lift(Toy(labels, marker, 0.0, 1.0), image, units, method, EFFUSION_CLASS)
    m, e = names.index(MARKER), names.index("pleural_effusion")
    assert np.argmax(shortcut) == m
    assert shortcut[m] / shortcut[e] == pytest.approx(5.0, rel=1e-4)     # lift ∝ |region value|
    others = [i for i in range(len(names)) if i not in (m, e)]
    assert np.allclose(shortcut[others], 0, atol=1e-6 * shortcut[m])
    assert np.argmax(control) == e and control[m] == pytest.approx(0, abs=1e-6 * control[e])
