"""KernelSHAP over units: exactness against brute-force Shapley values, efficiency,
caching, determinism, and the value functions of the efficient-KernelSHAP paper."""
import itertools
import math

import numpy as np
import pytest
import torch

from agg2exp_core.errors import InputError
from agg2exp_core.attribution.kernelshap import (build_game, coalition_values, kernelshap_explain,
                                     kernelshap_run, kernelshap_units, sample_coalitions,
                                     shapley_from_game)
from agg2exp_core.attribution.partitions import cube_partition

torch.set_num_threads(2)


def brute_force_shapley(game, m):
    """Exact Shapley values by the subset formula: ``[C, M]``."""
    masks = np.array(list(itertools.product([False, True], repeat=m)))
    values = game(masks)
    index = {row.tobytes(): i for i, row in enumerate(masks)}
    phi = np.zeros((values.shape[1], m))
    for row in masks:
        s = int(row.sum())
        for i in np.flatnonzero(~row):
            w = math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m)
            with_i = row.copy()
            with_i[i] = True
            phi[:, i] += w * (values[index[with_i.tobytes()]] - values[index[row.tobytes()]])
    return phi


def additive_game(masks):
    weights = np.array([3.0, -1.0, 0.5, 2.0, 0.0, 7.0])
    return (masks * weights).sum(axis=1, keepdims=True) + 1.0


def interaction_game(masks):
    m = masks.astype(float)
    a = 2 * m[:, 0] * m[:, 1] - 3 * m[:, 2] * m[:, 3] * m[:, 4] + m[:, 5] + 4 * np.maximum(m[:, 6], m[:, 7])
    b = np.sin(m @ np.arange(1, 9)) + m[:, 0] * m[:, 7]
    return np.stack([a, b], axis=1)


@pytest.mark.parametrize("game,m", [(additive_game, 6), (interaction_game, 8)])
def test_exhaustive_equals_brute_force(game, m):
    phi, info = shapley_from_game(game, m, n_coalitions=2 ** m, seed=0)
    assert info["exact"] and info["n_evaluations"] == 2 ** m
    assert np.allclose(phi, brute_force_shapley(game, m), atol=1e-10)


def test_additive_game_exact_even_when_sampled():
    phi, info = shapley_from_game(additive_game, 6, n_coalitions=20, seed=3)
    assert not info["exact"]
    assert np.allclose(phi[0], [3.0, -1.0, 0.5, 2.0, 0.0, 7.0], atol=1e-9)


def test_efficiency_and_accuracy_with_sampling():
    exact = brute_force_shapley(interaction_game, 8)
    phi, info = shapley_from_game(interaction_game, 8, n_coalitions=120, seed=0)
    assert not info["exact"]
    total = info["v_full"] - info["v_empty"]
    assert np.allclose(phi.sum(axis=1), total, atol=1e-10)  # efficiency holds exactly
    assert np.abs(phi - exact).max() < 0.25 * np.abs(exact).max()


def test_sampler_pairs_budget_and_determinism():
    masks, weights, exact = sample_coalitions(12, 200, seed=5)
    assert len(masks) == 198 and not exact
    assert np.isclose(weights.sum(), 1.0)
    keys = {m.tobytes() for m in masks}
    assert len(keys) == len(masks)  # distinct
    assert all((~m).tobytes() in keys for m in masks)  # antithetic: complements present
    again, w2, _ = sample_coalitions(12, 200, seed=5)
    assert np.array_equal(masks, again) and np.array_equal(weights, w2)


# ---------------------------------------------------------------- models
def tiny_net(seed=0, classes=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Conv3d(4, classes, 3, padding=1)).eval()


def test_tiny_conv_network_logit_value_exact():
    net = tiny_net()
    img = torch.rand(1, 12, 10, 8, generator=torch.Generator().manual_seed(1))
    part = cube_partition(img.shape[1:], (2, 2, 2))
    values, partition = kernelshap_units(net, img, None, partition=part, n_coalitions=2 ** 8)
    game = build_game(net, img, None, partition=part)
    assert np.array_equal(partition, part)
    assert np.allclose(values, brute_force_shapley(game.values, 8), rtol=1e-6, atol=1e-5)
    attr = kernelshap_explain(net, img, [1], partition=part, n_coalitions=2 ** 8)
    assert attr.shape == (1, 12, 10, 8) and attr.dtype == img.dtype
    assert torch.allclose(attr[0], torch.from_numpy(values[1][part]).float())


class ScaledIdentity(torch.nn.Module):
    """Class-1 logit = k * x, background logit 0: the logit value is additive over units."""

    def __init__(self, k=2.0):
        super().__init__()
        self.k = k

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), self.k * x], dim=1)


def test_logit_value_known_answer_through_pipeline():
    img = torch.zeros(1, 6, 4, 4)
    img[0, :3, :2] = 0.5   # predicted class 1 where x > 0
    img[0, 4:, 2:] = 0.25
    part = cube_partition((6, 4, 4), (2, 1, 1))
    values, _ = kernelshap_units(ScaledIdentity(), img, [1], partition=part, n_coalitions=4)
    expected = [2 * 0.5 * 3 * 2 * 4, 2 * 0.25 * 2 * 2 * 4]
    assert np.allclose(values[0], expected)


@pytest.mark.parametrize("value,expected", [("logit", 1.0), ("tp", 0.5), ("fp", -0.875),
                                            ("dice", 0.4), ("softdice", -0.375)])
def test_value_functions_known_answers(value, expected):
    # clean prediction P0 = [1, 1, 0, 0]; perturbed class-1 logits z = [2, -1, 3, 0.5] against 0
    z = torch.tensor([2.0, -1.0, 3.0, 0.5])
    logits = torch.stack([torch.zeros(4), z])[None]         # [B=1, l=2, V=4]
    p0 = torch.tensor([1, 1, 0, 0])
    roi = torch.ones(1, 4, dtype=torch.bool)
    got = coalition_values(logits, [1], p0, roi, value)
    assert got.shape == (1, 1) and np.isclose(float(got), expected, atol=1e-6)


def test_value_respects_roi():
    z = torch.tensor([2.0, -1.0, 3.0, 0.5])
    logits = torch.stack([torch.zeros(4), z])[None]
    p0 = torch.tensor([1, 1, 0, 0])
    roi = torch.tensor([[True, True, False, False]])
    assert np.isclose(float(coalition_values(logits, [1], p0, roi, "fp")), 0.0)
    assert np.isclose(float(coalition_values(logits, [1], p0, roi, "tp")), 1.0)


# ---------------------------------------------------------------- engines
SW = dict(roi_size=(12, 12, 12), overlap=0.25, mode="gaussian", sw_batch_size=3)


def _sw_case():
    net = tiny_net(seed=2)
    img = torch.rand(1, 30, 20, 16, generator=torch.Generator().manual_seed(4))
    part = cube_partition(img.shape[1:], (6, 4, 4))
    roi = np.zeros(img.shape[1:], bool)
    roi[2:8, 3:9, 2:7] = True   # a small ROI in one corner: few patches overlap it
    return net, img, part, roi


@pytest.mark.parametrize("value", ["logit", "tp", "softdice"])
def test_cached_equals_full_sliding_window(value):
    net, img, part, roi = _sw_case()
    kw = dict(partition=part, value=value, roi=roi, n_coalitions=40, seed=1, **SW)
    cached = kernelshap_run(net, img, [0, 2], inference="cached", **kw)
    baseline_only = kernelshap_run(net, img, [0, 2], inference="cached", cache_mb=0, **kw)
    roi_only = kernelshap_run(net, img, [0, 2], inference="roi", **kw)
    full = kernelshap_run(net, img, [0, 2], inference="full", **kw)
    for other in (baseline_only, roi_only):
        assert np.abs(other.values - full.values).max() < 1e-5
    assert np.abs(cached.values - full.values).max() < 1e-5
    assert np.allclose(cached.v_full, full.v_full, atol=1e-6)
    # memoising recomputed patches by their kept-unit pattern only adds hits
    assert cached.stats.patch_hits >= baseline_only.stats.patch_hits > roi_only.stats.patch_hits == 0
    # every coalition accounts for the 4 patches that overlap the ROI; some are served cached
    assert cached.stats.patch_hits > 0
    assert cached.stats.patch_hits + cached.stats.patch_misses == 4 * cached.stats.coalitions
    # ROI restriction: units outside the receptive-field support are not players
    assert cached.values.shape[1] < part.max() + 1
    assert (cached.partition[20:] == -1).all()


@pytest.mark.parametrize("padding_mode", ["constant", "reflect"])
def test_cached_equals_full_when_monai_pads(padding_mode):
    # the volume is thinner than a patch along axis 0: MONAI pads, and so must the cache
    net = tiny_net(seed=3)
    img = torch.rand(1, 8, 20, 14, generator=torch.Generator().manual_seed(5))
    part = cube_partition(img.shape[1:], (2, 3, 2))
    kw = dict(partition=part, value="softdice", n_coalitions=24, seed=2, padding_mode=padding_mode, **SW)
    cached = kernelshap_run(net, img, [1], inference="cached", **kw)
    full = kernelshap_run(net, img, [1], inference="full", **kw)
    assert np.abs(cached.values - full.values).max() < 1e-5


def test_receptive_field_crop_is_exact_for_a_small_network():
    net, img, part, roi = _sw_case()
    kw = dict(value="tp", roi=roi, n_coalitions=64, seed=0)
    crop = kernelshap_run(net, img, [1], partition=part, receptive_field=2, **kw)
    idx = np.argwhere(crop.partition >= 0)  # ROI box [2:8, 3:9, 2:7] dilated by 2 voxels
    assert idx.min(axis=0).tolist() == [0, 1, 0] and idx.max(axis=0).tolist() == [9, 10, 8]
    # two 3x3x3 convolutions see 2 voxels away: running the model on the crop only is
    # exact, i.e. equal to whole-volume inference with the same units (-1: never removed)
    clipped = np.where(crop.partition >= 0, part, -1)
    whole = kernelshap_run(net, img, [1], partition=clipped, **kw)
    assert np.array_equal(whole.unit_ids, crop.unit_ids)
    assert np.abs(whole.values - crop.values).max() < 1e-6


def test_determinism_and_seed_dependence():
    net, img, part, roi = _sw_case()
    kw = dict(partition=part, value="tp", roi=roi, n_coalitions=24, **SW)
    a = kernelshap_explain(net, img, [2], seed=7, **kw)
    b = kernelshap_explain(net, img, [2], seed=7, **kw)
    c = kernelshap_explain(net, img, [2], seed=8, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_one_evaluation_serves_all_classes():
    net, img, part, _ = _sw_case()
    kw = dict(partition=part, n_coalitions=20, seed=0)
    both = kernelshap_run(net, img, [0, 2], **kw)
    single = kernelshap_run(net, img, [2], **kw)
    assert both.n_evaluations == single.n_evaluations == 20
    assert np.allclose(both.values[1], single.values[0], atol=1e-6)


def test_bad_parameters_raise_input_error():
    net, img, part, _ = _sw_case()
    with pytest.raises(InputError, match="value function"):
        kernelshap_run(net, img, [0], partition=part, value="iou")
    with pytest.raises(InputError, match="shape"):
        kernelshap_run(net, img[0], [0], partition=part)
    with pytest.raises(InputError, match="unknown parameter.*n_samples"):
        kernelshap_run(net, img, [0], partition=part, n_samples=3)
