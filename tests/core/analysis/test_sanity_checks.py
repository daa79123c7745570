"""Sanity checks with known answers: a linear model whose map is its weights passes, a 'method' that is
an edge detector fails everything, the baseline is the class-to-class similarity, the trained model is
left untouched."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats

from agg2exp_core.analysis.sanity import SanityConfig, run_sanity_checks
from agg2exp_core.analysis.sanity.similarity import (central_slice_ssim, edge_magnitude, rank_correlation, spearman,
                                                     standardised_ranks)
from agg2exp_core.errors import InputError
from tests.support import model_folders as mf
from tests.support.sanity_models import LinearNet, band_mask, edge_explainer

SHAPE = (12, 12, 12)
N = int(np.prod(SHAPE))


def _image(seed: int = 0) -> torch.Tensor:
    """A smooth volume with edges (a bright cube) and noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, dtype=np.float32)
    image[3:9, 3:9, 3:9] = 1.0
    return torch.as_tensor(image + 0.1 * rng.standard_normal(SHAPE).astype(np.float32))[None]


def _final(frame, check="mprt"):
    rows = frame[frame.check == check]
    return rows[rows.step == rows.step.max()] if check == "mprt" else rows


def test_linear_model_passes_with_the_known_baseline():
    net = LinearNet(SHAPE, n_classes=3, shared=0.8)
    trained = copy.deepcopy(net.state_dict())
    mask = band_mask(SHAPE, 3)
    frame = run_sanity_checks(net, _image(), [1, 2], "vg", {}, SanityConfig(steps=1), mask=mask)
    weights = trained["dense.weight"].numpy()
    # the baseline of class 1 is the similarity of its map (its weights) to class 2's: known exactly
    expected = stats.spearmanr(np.abs(weights[1]), np.abs(weights[2])).statistic
    base = frame[(frame.check == "mprt") & (frame.class_id == 1) & (frame.metric == "spearman_abs")].baseline
    assert np.allclose(base, expected, atol=1e-9) and expected > 0.5
    final = _final(frame)
    voxel = final[final.metric.isin(["spearman_abs", "spearman_signed"])]
    assert voxel.value.abs().max() < 4 / np.sqrt(N)  # independent re-drawn weights: rank correlation ~ 0
    assert voxel.passed.all()
    assert final[final.metric == "ssim"].passed.all()
    trained_rows = frame[(frame.check == "mprt") & (frame.step == 0) & (frame.metric != "ssim")]
    assert np.allclose(trained_rows.value, 1.0)  # the trained model against itself
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in trained.items())


def test_random_logit_and_edge_controls_pass_for_class_specific_maps():
    net = LinearNet(SHAPE, n_classes=3, shared=0.0)  # classes with unrelated weights
    frame = run_sanity_checks(net, _image(), [0, 1, 2], "vg", {}, SanityConfig(steps=0), mask=band_mask(SHAPE, 3))
    logit = frame[(frame.check == "random_logit") & (frame.metric == "spearman_signed")]
    assert len(logit) == 3 and logit.value.abs().max() < 4 / np.sqrt(N) and logit.passed.all()
    edge = frame[frame.check == "edge"]
    assert len(edge) == 3 and edge.value.abs().max() < 4 / np.sqrt(N) and edge.passed.all()


def test_an_edge_detector_fails_every_check():
    net = LinearNet(SHAPE, n_classes=3)
    frame = run_sanity_checks(net, _image(), [1, 2], edge_explainer, {}, SanityConfig(steps=2),
                              mask=band_mask(SHAPE, 3))
    mprt = frame[(frame.check == "mprt") & (frame.step > 0)]
    assert np.allclose(mprt.value, 1.0) and not mprt.passed.any()  # the map ignores the model
    assert not _final(frame, "random_logit").passed.any()
    edge = frame[frame.check == "edge"]
    assert np.allclose(edge.value, 1.0) and not edge.passed.any()


def test_one_class_is_compared_with_another_class_of_the_model():
    net = LinearNet(SHAPE, n_classes=3, shared=0.8)
    frame = run_sanity_checks(net, _image(), [2], "vg", {}, SanityConfig(steps=0), mask=band_mask(SHAPE, 3))
    weights = net.dense.weight.detach().numpy()
    base = frame[(frame.check == "mprt") & (frame.metric == "spearman_signed")].baseline.iloc[0]
    assert np.isclose(base, stats.spearmanr(weights[2], weights[0]).statistic)
    assert frame[frame.check == "random_logit"].layer.iloc[0] == "class 0"


def test_unet_rows_name_their_layers_and_metrics():
    net = mf.tiny_unet(3)
    frame = run_sanity_checks(net, torch.rand(1, 16, 16, 16), [1, 2], "vg", {}, SanityConfig(steps=1),
                              case_id="c0")
    mprt = frame[frame.check == "mprt"]
    assert sorted(mprt.step.unique()) == [0, 1, 5]
    assert set(mprt[mprt.step == 1].layer) == {"model.2.conv"}
    assert set(frame.metric) == {"spearman_abs", "spearman_signed", "ssim", "row_spearman"}
    assert set(frame.case_id) == {"c0"} and frame.value.notna().all()


def test_bad_input():
    net = LinearNet(SHAPE, n_classes=3)
    with pytest.raises(InputError, match="classes"):
        run_sanity_checks(net, _image(), [5], "vg")
    with pytest.raises(InputError, match="torch module"):
        run_sanity_checks(lambda x: x.repeat(1, 3, 1, 1, 1), _image(), [1], "vg")


def test_similarity_measures():
    a = np.random.default_rng(0).standard_normal((9, 9, 9))
    assert spearman(a, 2 * a + 1) == pytest.approx(1.0) and np.isnan(spearman(a, np.zeros_like(a)))
    tied = np.round(a, 0)  # many ties: average ranks, as SciPy's
    b = a + np.random.default_rng(1).standard_normal(a.shape)
    expected = stats.spearmanr(tied.ravel(), b.ravel()).statistic
    assert rank_correlation(standardised_ranks(tied), standardised_ranks(b)) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(rank_correlation(standardised_ranks(np.ones(10)), standardised_ranks(np.arange(10))))
    assert central_slice_ssim(a, a) == pytest.approx(1.0) and central_slice_ssim(a, -a) == pytest.approx(1.0)
    assert np.isnan(central_slice_ssim(np.ones((2, 2, 3)), np.ones((2, 2, 3))))
    step = np.zeros((8, 8, 8))
    step[4:] = 1.0
    edges = edge_magnitude(step)
    assert edges[3:5].min() > 0 and edges[:2].max() == 0 and edges[6:].max() == 0  # only at the step
