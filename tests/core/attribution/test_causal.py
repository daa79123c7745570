"""Causal regional effects, network-component ablation and the supervoxel relevance mask:
known answers on hand-built networks, brute force on a small one, determinism, bad donors."""
import numpy as np
import pytest
import torch

from agg2exp_core.attribution import explain
from agg2exp_core.attribution.causal import (causal_run, component_effects, default_blocks, mask_faithfulness,
                                             relevance_mask, relevance_units, unit_values)
from agg2exp_core.attribution.partitions import cube_partition
from agg2exp_core.attribution.registry import check_params
from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import WindowSpec, predict_logits

torch.set_num_threads(2)
WINDOW = WindowSpec((12, 12, 12), overlap=0.25, sw_batch_size=3)


def tiny_net(seed=2, classes=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Conv3d(4, classes, 3, padding=1)).eval()


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def fhat(net, x, mask, window, classes):
    logits = predict_logits(net, x, window)
    return np.array([float((logits[c].double() * (mask == c)).sum()) for c in classes])


def test_constant_donor_equals_brute_force_for_every_class():
    net, img = tiny_net(), rand(1, 30, 20, 16, seed=4)
    part = cube_partition(img.shape[1:], (3, 2, 2))
    result = causal_run(net, img, None, partition=part, window=WINDOW, baseline=0.25)
    mask = predict_logits(net, img, WINDOW).argmax(0)
    classes = [0, 1, 2]
    clean = fhat(net, img, mask, WINDOW, classes)
    brute = np.zeros((3, 12))
    for r in range(12):
        x = img.clone()
        x[0][torch.from_numpy(part == r)] = 0.25
        brute[:, r] = clean - fhat(net, x, mask, WINDOW, classes)
    assert result.classes == classes and np.array_equal(result.region_ids, np.arange(12))
    np.testing.assert_allclose(result.ate, brute, rtol=1e-5, atol=1e-4 * np.abs(brute).max())
    assert np.all(result.se == 0) and np.all(result.n == 1)
    np.testing.assert_allclose(result.v_clean, clean, rtol=1e-5)
    # only the windows that overlap a region are recomputed: fewer patches than 12 volumes' worth
    assert result.stats.patch_misses < 12 * len(WINDOW.geometry(part.shape).slices)


class RegionAOnly(torch.nn.Module):
    """Class 1's logit everywhere is 1 + mean of x over region A; class 2's is 2 + x (local) on
    the half y >= 4, where it wins, and -10 elsewhere."""

    def __init__(self, region_a: torch.Tensor, side: torch.Tensor):
        super().__init__()
        self.register_buffer("a", region_a.float())
        self.register_buffer("side", side.float())

    def forward(self, x):
        pooled = (x * self.a).sum(dim=(2, 3, 4), keepdim=True) / self.a.sum()
        local = (2.0 + x) * self.side - 10.0 * (1 - self.side)
        return torch.cat([torch.zeros_like(x), 1.0 + pooled.expand_as(x), local], dim=1)


def test_class_depending_on_region_a_only_has_zero_effect_elsewhere():
    shape = (8, 8, 4)
    part = cube_partition(shape, (2, 2, 1))  # region 0 = A
    side = torch.zeros(shape, dtype=torch.bool)
    side[:, 4:] = True
    net = RegionAOnly(torch.from_numpy(part == 0), side).eval()
    img = rand(1, *shape, seed=1)
    mask = 1 + side.long()  # the clean prediction
    donors = [rand(1, *shape, seed=10 + k) for k in range(8)]
    result = causal_run(net, img, [1, 2], partition=part, donor="images", donors=donors, n_samples=8,
                        tolerance=0.0, roi_size=None)
    assert np.all(result.n == 8) and result.se[0, 0] > 0
    # class 1: only A matters; exact value: |mask=1| * (mean_A x - mean_donors mean_A d)
    a = torch.from_numpy(part == 0)
    expected = int((mask == 1).sum()) * float(img[0][a].mean() - torch.stack([d[0][a].mean() for d in donors]).mean())
    assert np.isclose(result.ate[0, 0], expected, rtol=1e-5)
    assert np.all(np.abs(result.ate[0, 1:]) <= 3 * result.se[0, 1:] + 1e-9)
    # class 2 (local, on the voxels predicted 2 = regions 1 and 3 of the y-halves) sees those regions only
    assert np.abs(result.ate[1, [0, 2]]).max() < 1e-9 and np.abs(result.ate[1, [1, 3]]).min() > 0.1


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_image_donors_cached_equals_full_and_is_deterministic_for_a_seed():
    net, img = tiny_net(), rand(1, 30, 20, 16, seed=4)
    part = cube_partition(img.shape[1:], (2, 2, 1))
    donors = [rand(1, 30, 20, 16, seed=20 + k) for k in range(5)]
    kw = dict(partition=part, window=WINDOW, donor="images", donors=donors, n_samples=3, tolerance=0.0)
    a = causal_run(net, img, [1, 2], seed=3, **kw)
    b = causal_run(net, img, [1, 2], seed=3, **kw)
    c = causal_run(net, img, [1, 2], seed=4, **kw)
    full = causal_run(net, img, [1, 2], seed=3, inference="full", **kw)
    assert np.array_equal(a.ate, b.ate) and np.array_equal(a.se, b.se)
    assert not np.allclose(a.ate, c.ate)
    assert np.abs(a.ate - full.ate).max() <= 1e-6 * np.abs(full.ate).max()
    assert np.all(a.n == 3) and np.all(a.se > 0)


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_masked_patch_sums_equal_the_fused_logit_value(aggregation):
    from agg2exp_core.attribution.causal.effects import _value_function
    from agg2exp_core.attribution.kernelshap import build_game

    net, img = tiny_net(), rand(1, 30, 20, 16, seed=4)
    game = build_game(net, img, None, partition=cube_partition(img.shape[1:], (3, 2, 2)), window=WINDOW,
                      aggregation=aggregation)
    keep = np.ones((5, game.n_units), bool)
    keep[np.arange(5), [0, 3, 5, 7, 11]] = False
    fused = game.values(keep)
    before = game.stats.patch_misses
    masked = _value_function(game)(game.engine, keep)
    np.testing.assert_allclose(masked, fused, rtol=1e-12, atol=1e-12 * np.abs(fused).max())
    # each intervention ran only the windows touching its region, and fused nothing
    assert game.stats.patch_misses - before < 5 * len(game.engine.patches)


def test_screen_then_more_donors_until_the_standard_error_is_small():
    net, img = tiny_net(), rand(1, 30, 20, 16, seed=4)
    part = cube_partition(img.shape[1:], (2, 1, 1))
    donors = [rand(1, 30, 20, 16, seed=40 + k) for k in range(15)]
    kw = dict(partition=part, window=WINDOW, donor="images", donors=donors, n_samples=15, n_screen=3)
    loose = causal_run(net, img, [1], tolerance=10.0, **kw)
    strict = causal_run(net, img, [1], tolerance=0.0, **kw)
    assert np.all(loose.n == 12) and np.all(strict.n == 15)    # no stop before MIN_DONORS (10): 3, 6, 9, 12
    # the screen's donors are the first ones the full run draws
    assert np.all(np.abs(loose.ate - strict.ate) < 4 * strict.se + 1e-9)


def test_explain_returns_each_region_effect_on_its_voxels():
    net, img = tiny_net(), rand(1, 12, 10, 8, seed=1)
    part = cube_partition(img.shape[1:], (2, 2, 1))
    result = causal_run(net, img, [0, 2], partition=part)
    attr = explain(net, img, "causal", classes=[0, 2], partition=part)
    assert attr.shape == (2, 12, 10, 8) and attr.dtype == img.dtype
    assert torch.allclose(attr, torch.from_numpy(result.ate[:, part]).float())


def test_bad_donors_and_parameters_are_one_line_errors():
    net, img = tiny_net(), rand(1, 12, 10, 8, seed=1)
    part = cube_partition(img.shape[1:], (2, 2, 1))
    with pytest.raises(InputError, match=r"donor 1 has shape \[12, 10, 9\], expected \[12, 10, 8\]") as err:
        causal_run(net, img, [1], partition=part, donor="images", donors=[rand(1, 12, 10, 8), rand(1, 12, 10, 9)])
    assert "\n" not in str(err.value)
    hu = rand(1, 12, 10, 8) * 2048 - 1024  # raw HU: not preprocessed like the scaled image
    with pytest.raises(InputError, match="donor 0 has intensities .* preprocess donors like the image"):
        causal_run(net, img, [1], partition=part, donor="images", donors=[hu])
    with pytest.raises(InputError, match="needs at least one donor|list of donor volumes"):
        causal_run(net, img, [1], partition=part, donor="images")
    with pytest.raises(InputError, match="unknown donor"):
        causal_run(net, img, [1], partition=part, donor="noise")
    with pytest.raises(InputError, match="unknown parameter 'n_coalitions'"):
        check_params("causal", {"n_coalitions": 10})


# ---------------------------------------------------------------- components
class TwoPaths(torch.nn.Module):
    """Class 1 = block a (2x), class 2 = block b (3x): each class depends on one block only."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv3d(1, 1, 1, bias=False)
        self.b = torch.nn.Conv3d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.a.weight.fill_(2.0)
            self.b.weight[0].fill_(3.0)
            self.b.weight[1].fill_(-1.0)

    def forward(self, x):
        b = self.b(x)
        return torch.cat([torch.zeros_like(x), self.a(x), b[:, :1] + 0.0 * b[:, 1:]], dim=1)


@pytest.mark.parametrize("window", [None, WindowSpec((6, 6, 6), overlap=0.5)])
def test_component_ablation_known_answer(window):
    net, img = TwoPaths().eval(), rand(1, 10, 8, 6, seed=0)
    mask = torch.zeros(10, 8, 6, dtype=torch.long)
    mask[:5] = 1
    mask[5:, :4] = 2
    assert default_blocks(net) == ["a", "b"]
    result = component_effects(net, img, [1, 2], mask=mask, window=window)  # constant donor 0: activation 0
    x = img[0].double()
    expected = np.array([[2 * float(x[mask == 1].sum()), 0.0], [0.0, 3 * float(x[mask == 2].sum())]])
    np.testing.assert_allclose(result.ate, expected, rtol=1e-6, atol=1e-9)
    channels = component_effects(net, img, [2], mask=mask, window=window, channels_of="b")
    assert channels.components == ["b[0]", "b[1]"]
    np.testing.assert_allclose(channels.ate[0], [expected[1, 1], 0.0], rtol=1e-6, atol=1e-9)


def test_component_ablation_to_donor_activations_has_a_standard_error():
    net, img = TwoPaths().eval(), rand(1, 10, 8, 6, seed=0)
    mask = torch.ones(10, 8, 6, dtype=torch.long)
    donors = [rand(10, 8, 6, seed=5 + k) for k in range(4)]
    each = component_effects(net, img, [1], mask=mask, components=["a"], donor="images", donors=donors,
                             ablation="donor")
    mean = component_effects(net, img, [1], mask=mask, components=["a"], donor="images", donors=donors)
    per_donor = np.array([2 * float((img[0] - d).double().sum()) for d in donors])
    assert np.isclose(each.ate[0, 0], per_donor.mean(), rtol=1e-6)
    assert np.isclose(each.se[0, 0], per_donor.std(ddof=1) / 2, rtol=1e-5)
    assert np.isclose(mean.ate[0, 0], per_donor.mean(), rtol=1e-6) and mean.se[0, 0] == 0  # linear block
    with pytest.raises(InputError, match="no module 'c'"):
        component_effects(net, img, [1], mask=mask, components=["c"])


# ---------------------------------------------------------------- relevance mask
def test_relevance_units_known_answers():
    assert relevance_units([5.0, -1.0, 3.0, 2.0], 0.8).tolist() == [0, 2]     # 8 of 10
    assert relevance_units([5.0, -1.0, 3.0, 2.0], 0.5).tolist() == [0]        # 5 of 10
    assert relevance_units([5.0, -1.0, 3.0, 2.0], 1.0).tolist() == [0, 2, 3]
    assert relevance_units([-1.0, 0.0], 0.8).tolist() == []
    with pytest.raises(InputError, match="relevance_share"):
        relevance_units([1.0], 1.5)
    part = np.array([[0, 0, 1], [2, 2, -1]])
    values = unit_values(np.array([[4.0, 4.0, 1.0], [-2.0, -2.0, 9.0]]), part)
    assert values.tolist() == [4.0, 1.0, -2.0]
    assert relevance_mask(values, part, 0.8).tolist() == [[True, True, False], [False, False, False]]


class ClassOneWhereBright(torch.nn.Module):
    def forward(self, x):
        return torch.cat([torch.full_like(x, 0.25), x], dim=1)  # class 1 where x > 0.25


def test_relevance_mask_faithfulness_keep_and_remove():
    img = torch.zeros(1, 8, 8, 4)
    img[0, :4] = 0.5
    prediction = (img[0] > 0.25).long().numpy()
    inside = np.zeros((1, 8, 8, 4), bool)
    inside[0, :4] = True
    keep, remove = mask_faithfulness(ClassOneWhereBright(), img, inside, [1], prediction)
    assert keep.tolist() == [1.0] and remove.tolist() == [0.0]
    half = np.zeros((1, 8, 8, 4), bool)
    half[0, :2] = True
    keep, remove = mask_faithfulness(ClassOneWhereBright(), img, half, [1], prediction)
    assert np.isclose(keep[0], 2 * 64 / (64 + 128)) and np.isclose(remove[0], 2 * 64 / (64 + 128))
