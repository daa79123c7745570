"""Seg-Grad-CAM in 3-D: Captum parity, known answers, grids, windows, layers by name and bad layers."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from agg2exp_core.attribution import explain
from agg2exp_core.attribution.target_layers import default_layer_names, resolve_layers
from agg2exp_core.errors import InputError
from agg2exp_core.models.networks import build_network
from agg2exp_core.models.sources.nnunet import NnUNetNetwork

SMALL_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 1}}


class PooledLinear(torch.nn.Module):
    """logit_c = w_c · nearest-upsample(A_c), A = ``features``(x) = avg-pool(x) times per-channel gains.

    Class c's logit is a known linear function of feature map c only, so Grad-CAM's weights
    are known: ∂f̂_c/∂A_c[u] = w_c · |ŷ_c ∩ block u|, α_c = w_c |ŷ_c| / n_u, α_k = 0 for k ≠ c.
    """

    def __init__(self, weights=(1.0, 2.0, -3.0), gains=(1.0, 0.5, 2.0)):
        super().__init__()
        k = len(weights)
        self.features = torch.nn.Sequential(torch.nn.AvgPool3d(2), torch.nn.Conv3d(1, k, 1, bias=False))
        self.unused = torch.nn.Conv3d(1, 1, 1)  # runs, but its output is dropped
        self.never = torch.nn.Conv3d(1, 1, 1)   # never runs
        with torch.no_grad():
            self.features[1].weight.copy_(torch.tensor(gains).view(k, 1, 1, 1, 1))
        self.register_buffer("w", torch.tensor(weights).view(1, k, 1, 1, 1))

    def forward(self, x):
        a = self.features(x)
        self.unused(x)
        return self.w * F.interpolate(a, size=x.shape[2:], mode="nearest")


def _image(shape=(8, 10, 12), seed=0):
    return torch.rand((1, *shape), generator=torch.Generator().manual_seed(seed)) + 0.1  # > 0


def _box_mask(shape, cls=1, rest=0):
    mask = torch.full(shape, rest, dtype=torch.long)
    mask[2:6, 3:8, 4:10] = cls
    return mask


def test_known_answer_of_a_network_linear_in_one_feature_map():
    torch.manual_seed(0)
    net, image = PooledLinear().eval(), _image()
    mask = _box_mask(image.shape[1:])
    maps = explain(net, image, "gradcam", classes=[0, 1, 2], mask=mask, layer="features", device="cpu")
    a = net.features(image[None]).detach()[0]                        # [3, 4, 5, 6]
    n_u = a[0].numel()
    for c, size in ((0, int((mask == 0).sum())), (1, int((mask == 1).sum()))):
        alpha = float(net.w.flatten()[c]) * size / n_u
        expected = F.interpolate(F.relu(alpha * a[c])[None, None], size=image.shape[1:], mode="trilinear",
                                 align_corners=False)[0, 0]
        torch.testing.assert_close(maps[c], expected, rtol=1e-5, atol=1e-6)
    assert maps.shape == (3, *image.shape[1:])
    assert torch.equal(maps[2], torch.zeros_like(maps[2]))           # class 2: empty mask, zeros


def test_a_negative_weight_gives_an_all_zero_map_and_mean_scales_by_the_mask_size():
    net, image = PooledLinear(weights=(-1.0, -2.0, 1.0)).eval(), _image(seed=1)
    mask = _box_mask(image.shape[1:], cls=1, rest=2)
    summed = explain(net, image, "gradcam", classes=[1, 2], mask=mask, layer="features", device="cpu")
    assert torch.equal(summed[0], torch.zeros_like(summed[0]))       # ReLU of α·A with α < 0, A > 0
    assert summed[1].min() > 0
    mean = explain(net, image, "gradcam", classes=[2], mask=mask, layer="features", device="cpu",
                   aggregation="mean")
    torch.testing.assert_close(mean[0] * int((mask == 2).sum()), summed[1], rtol=1e-5, atol=1e-6)


def test_parity_with_captum_layer_gradcam_on_a_monai_unet():
    from captum.attr import LayerAttribution, LayerGradCam

    torch.manual_seed(1)
    net = build_network(SMALL_UNET, 3).eval()
    image = _image((16, 12, 8), seed=2)
    with torch.no_grad():
        mask = net(image[None])[0].argmax(0)
    ours = explain(net, image, "gradcam", device="cpu")              # default layer of a MONAI UNet: model.1
    assert default_layer_names(net) == ["model.1"]
    for c in range(3):
        if not (mask == c).any():
            continue
        score = lambda x, c=c: (net(x)[:, c] * (mask == c)).flatten(1).sum(1)  # noqa: E731
        cam = LayerGradCam(score, net.model[1]).attribute(image[None], relu_attributions=True)
        theirs = LayerAttribution.interpolate(cam, tuple(image.shape[1:]), interpolate_mode="trilinear")
        torch.testing.assert_close(ours[c], theirs[0, 0].detach(), rtol=1e-4, atol=1e-6)
    assert ours.min() >= 0 and ours.sum() > 0


def test_windows_that_tile_the_volume_give_each_window_its_own_grad_cam():
    torch.manual_seed(2)
    net = build_network(SMALL_UNET, 3).eval()
    image = _image((16, 8, 8), seed=3)
    mask = torch.randint(0, 3, (16, 8, 8), generator=torch.Generator().manual_seed(0))
    fused = explain(net, image, "gradcam", mask=mask, roi_size=(8, 8, 8), overlap=0.0, mode="constant",
                    device="cpu")
    for half in (slice(0, 8), slice(8, 16)):
        alone = explain(net, image[:, half], "gradcam", mask=mask[half], device="cpu")
        torch.testing.assert_close(fused[:, half], alone, rtol=1e-4, atol=1e-6)


def test_a_volume_smaller_than_the_window_comes_back_on_the_image_grid():
    torch.manual_seed(3)
    net = build_network(SMALL_UNET, 3).eval()
    image = _image((12, 8, 6), seed=4)
    maps = explain(net, image, "gradcam", roi_size=(16, 8, 8), device="cpu")
    assert maps.shape == (3, 12, 8, 6) and maps.min() >= 0 and torch.isfinite(maps).all()
    assert maps.sum() > 0


def test_an_nnunet_fold_ensemble_of_one_network_twice_equals_that_network():
    torch.manual_seed(4)
    net = build_network(SMALL_UNET, 3).eval()
    folds = NnUNetNetwork([net, copy.deepcopy(net)]).eval()
    assert default_layer_names(folds) == ["folds.0.model.1", "folds.1.model.1"]
    image = _image((8, 8, 8), seed=5)
    torch.testing.assert_close(explain(folds, image, "gradcam", device="cpu"),
                               explain(net, image, "gradcam", device="cpu"), rtol=1e-4, atol=1e-6)


def test_a_mirrored_copys_map_is_flipped_back_before_the_relu():
    """Oracle: with mirroring along axis 0, the ensemble logit is (f(x) + flip(f(flip x)))/2, so the
    pre-ReLU map is (M(x, ŷ) + flip(M(flip x, flip ŷ)))/2 with M Captum's unrectified LayerGradCam."""
    from captum.attr import LayerAttribution, LayerGradCam

    torch.manual_seed(5)
    net = build_network(SMALL_UNET, 3).eval()
    mirrored = NnUNetNetwork([net], mirror_axes=(0,)).eval()
    assert mirrored.flips == [(2,)]
    image = _image((8, 8, 8), seed=8)
    mask = torch.randint(0, 3, (8, 8, 8), generator=torch.Generator().manual_seed(1))
    ours = explain(mirrored, image, "gradcam", mask=mask, device="cpu")

    def unrectified(x, m, c):
        score = lambda inputs: (net(inputs)[:, c] * (m == c)).flatten(1).sum(1)  # noqa: E731
        return LayerGradCam(score, net.model[1]).attribute(x[None], relu_attributions=False).detach()

    for c in range(3):
        pre = (unrectified(image, mask, c) + torch.flip(unrectified(torch.flip(image, (1,)), torch.flip(mask, (0,)), c),
                                                        (2,))) / 2
        expected = LayerAttribution.interpolate(F.relu(pre), (8, 8, 8), interpolate_mode="trilinear")[0, 0]
        torch.testing.assert_close(ours[c], expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ours, explain(net, image, "gradcam", mask=mask, device="cpu"))


@pytest.mark.parametrize("config, expected", [
    ({"name": "dynunet"}, "upsamples.2"),
    ({"name": "segresnet"}, "up_layers.2"),
    ({"name": "basicunet", "params": {"features": [4, 4, 4, 4, 4, 4]}}, "upcat_1"),
    ({"name": "unetr", "params": {"feature_size": 4, "hidden_size": 48, "mlp_dim": 48, "num_heads": 4}}, "decoder2"),
])
def test_default_layers_of_monai_networks_are_their_last_decoder_block(config, expected):
    net = build_network(config, 2, roi_size=(16, 16, 16))
    assert default_layer_names(net) == [expected]
    assert resolve_layers(net, None)[0][1] is dict(net.named_modules())[expected]


def test_default_layer_of_nnunets_plain_conv_unet_is_its_last_decoder_stage():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    net = PlainConvUNet(1, 3, (4, 8, 8), torch.nn.Conv3d, 3, (1, 2, 2), (1, 1, 1), 2, (1, 1),
                        conv_bias=True, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU).eval()
    assert default_layer_names(net) == ["decoder.stages.1"]
    image = _image((8, 8, 8), seed=6)
    maps = explain(net, image, "gradcam", device="cpu")
    assert maps.shape == (2, 8, 8, 8) and maps.sum() > 0  # num_classes = 2


def test_dynunets_default_layer_is_at_full_resolution():
    net = build_network({"name": "dynunet"}, 2).eval()
    grids = []
    handle = dict(net.named_modules())[default_layer_names(net)[0]].register_forward_hook(
        lambda m, i, o: grids.append(tuple(o.shape[2:])))
    with torch.no_grad():
        net(torch.zeros(1, 1, 16, 16, 16))
    handle.remove()
    assert grids == [(16, 16, 16)]


@pytest.mark.parametrize("layer, message", [
    ("decoder.nope", "no module named 'decoder.nope' in PooledLinear (its top-level modules: features, unused, never"),
    ("", "no module named ''"),
    (3, "expected a module name or a list of names, got 3"),
    ("unused", "does not reach the output logits"),
    ("never", "never ran in a forward pass"),
    ("features.0", None),  # a fine layer: [B, 1, X/2, Y/2, Z/2]
])
def test_layer_by_name_and_bad_layer_names_are_one_clear_line(layer, message):
    net, image = PooledLinear().eval(), _image()
    if message is None:
        assert explain(net, image, "gradcam", layer=layer, device="cpu").shape == (3, 8, 10, 12)
        return
    with pytest.raises(InputError) as err:
        explain(net, image, "gradcam", layer=layer, device="cpu")
    text = str(err.value)
    assert text.startswith("layer: ") and "\n" not in text
    assert message.split(" (its")[0] in text


def test_no_default_layer_for_an_unknown_network_says_to_name_one():
    with pytest.raises(InputError, match=r"no default Seg-Grad-CAM layer for a PooledLinear: name one with "
                                         r"the 'layer' parameter \(its top-level modules: features, unused, never\)"):
        explain(PooledLinear().eval(), _image(), "gradcam", device="cpu")


def test_a_layer_run_twice_per_forward_pass_is_refused():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = torch.nn.Conv3d(1, 1, 1)

        def forward(self, x):
            return torch.cat([self.block(x), self.block(-x)], 1)

    with pytest.raises(InputError, match="block ran 2 time"):
        explain(Twice().eval(), _image(), "gradcam", layer="block", device="cpu")


def test_unknown_parameters_and_torchscript_are_refused():
    net = PooledLinear().eval()
    with pytest.raises(InputError, match="unknown parameter 'steps' for method 'gradcam'"):
        explain(net, _image(), "gradcam", layer="features", steps=3)
    scripted = torch.jit.trace(net, torch.rand(1, 1, 8, 10, 12))
    with pytest.raises(InputError, match="TorchScript"):
        explain(scripted, _image(), "gradcam", device="cpu")


def test_the_network_is_left_without_hooks_and_in_place():
    net = build_network(SMALL_UNET, 3).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    explain(net, _image((8, 8, 8)), "gradcam", device="cpu")
    assert all(not m._forward_hooks for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# ---------------------------------------------------------------- models as the loaders build them
def test_an_nnunet_folder_and_a_monai_bundle_get_their_default_layers(tmp_path):
    import model_folders as mf

    from agg2exp_core.attribution.registry import check_params_for_model
    from agg2exp_core.models.sources import load_model

    nnunet = load_model(mf.write_nnunet(tmp_path / "Dataset999", folds=(0, 1)), device="cpu")
    stages = len(nnunet.network.folds[0].decoder.stages)
    assert default_layer_names(nnunet.network) == [f"folds.0.decoder.stages.{stages - 1}",
                                                    f"folds.1.decoder.stages.{stages - 1}"]
    image = _image(tuple(nnunet.window.roi_size), seed=7)
    maps = explain(nnunet, image, "gradcam", device="cpu")          # through nnU-Net's own window
    assert maps.shape == (3, *image.shape[1:]) and maps.min() >= 0 and maps.sum() > 0
    guided = explain(nnunet, image, "guided_backprop", classes=[1], device="cpu")   # in-place LeakyReLU
    assert torch.isfinite(guided).all() and not torch.allclose(guided, explain(nnunet, image, "vg", classes=[1]))
    bundle = load_model(mf.write_bundle(tmp_path / "bundle"), device="cpu")
    check_params_for_model("gradcam", bundle, {})                     # its network_def is a MONAI UNet
    assert default_layer_names(bundle.network) == ["model.1"]
    with pytest.raises(InputError, match="no module named 'decoder.stages.1' in UNet"):
        check_params_for_model("gradcam", bundle, {"layer": "decoder.stages.1"})
    mirrored = load_model(tmp_path / "Dataset999", device="cpu", mirroring=True)
    assert explain(mirrored, image, "gradcam", classes=[1], device="cpu").shape == (1, *image.shape[1:])
