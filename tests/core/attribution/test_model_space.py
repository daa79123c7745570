"""The model's own air and intensity range where the causal method and the sensitivity metric
perturb an image: a z-scored model (nnU-Net-like CT normalisation, mean 86 HU, SD 360 HU) has
its air at -3.08, not 0.0 (= 86 HU, soft tissue), and a range of 11.4 units, not [0, 1]."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agg2exp_core.analysis.evaluation import metrics
from agg2exp_core.attribution.causal import causal_run
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models.segmenter import Segmenter
from agg2exp_core.pipeline.causal_stage import fit_to_grid

MEAN, SD, CLIP = 86.0, 360.0, (-1024.0, 3071.0)
AIR = (-1024.0 - MEAN) / SD
SHAPE = (6, 4, 4)


class LinearSeg(torch.nn.Module):
    """Class 1 logit = w * x everywhere (always predicted), class 0 = -1e3."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        return torch.cat([torch.full_like(x, -1e3), self.w * x], dim=1)


def zscored_model(seed: int = 0) -> tuple[Segmenter, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(SHAPE, generator=g) + 0.5
    image = (torch.rand(1, *SHAPE, generator=g) * 1400 - 200 - MEAN) / SD      # soft tissue to bone, z-scored
    preprocessing = Preprocessing(spacing=None, normalization="ct", hu_window=CLIP, mean=MEAN, std=SD)
    return Segmenter(LinearSeg(w), {}, ["background", "organ"], preprocessing, None), image


def test_the_z_scored_model_knows_its_air_and_range():
    model, _ = zscored_model()
    assert model.air_value() == pytest.approx(AIR)
    assert model.value_range() == pytest.approx(((CLIP[0] - MEAN) / SD, (CLIP[1] - MEAN) / SD))
    assert Preprocessing().value_range() == (0.0, 1.0)


def test_constant_donor_causal_effect_replaces_regions_with_the_models_air():
    model, image = zscored_model()
    partition = np.repeat(np.arange(3), 2)[:, None, None] * np.ones(SHAPE, dtype=int)
    result = causal_run(model, image, [1], partition=partition, roi_size=None)
    # linear logit summed over the (whole) predicted mask: effect of region r = sum_r w (x - air)
    expected = [float((model.network.w * (image[0] - AIR))[partition == r].sum()) for r in range(3)]
    np.testing.assert_allclose(result.ate[0], expected, rtol=1e-4)


def test_donors_are_padded_with_air_and_clamped_to_the_models_range():
    model, image = zscored_model()
    low, high = model.value_range()
    small = torch.full((1, 2, 4, 4), high + 5.0)                           # brighter than the clip allows
    donor = SimpleNamespace(image=small, spacing=(1.0, 1.0, 1.0), affine=np.eye(4))
    case = SimpleNamespace(image=image, spacing=(1.0, 1.0, 1.0), affine=np.eye(4))
    fitted = fit_to_grid(donor, case, model.air_value(), model.value_range())
    assert fitted.shape == image.shape
    assert torch.allclose(fitted[0, 2:4], torch.tensor(high))             # the donor, clamped to the range
    assert torch.allclose(fitted[0, :2], torch.tensor(AIR)) and torch.allclose(fitted[0, 4:], torch.tensor(AIR))


def test_sensitivity_noise_is_a_tenth_of_the_models_intensity_range():
    model, image = zscored_model()
    seen = []

    def record(model, x, classes=None, **_):
        seen.append(x - image)
        return torch.ones(1, *SHAPE)

    metrics.sensitivity(model, image, torch.ones(SHAPE), 1, record, n=2, lower_bound=0.1, seed=0)
    low, high = model.value_range()
    largest = max(float(d.abs().max()) for d in seen)
    assert 0.9 * 0.1 * (high - low) < largest <= 0.1 * (high - low)       # ±410 HU, not ±0.1 SD = ±36 HU
