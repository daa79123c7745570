"""Guided Backprop: Captum parity on ReLU networks, known answers for LeakyReLU / PReLU, bad input."""
from __future__ import annotations

import pytest
import torch

from agg2exp_core.attribution import explain
from agg2exp_core.attribution.guided import GUIDED_ACTIVATIONS
from agg2exp_core.errors import InputError
from agg2exp_core.models.networks import build_network

RELU_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 1, "act": "RELU"}}


def _image(shape=(8, 8, 8), seed=0):
    return torch.rand((1, *shape), generator=torch.Generator().manual_seed(seed))


class PointwiseMLP(torch.nn.Module):
    """Per voxel: logit_c = Σ_k v_ck · act(w_k x + b_k) (1x1x1 convolutions), with known weights."""

    def __init__(self, act: torch.nn.Module):
        super().__init__()
        self.first, self.act, self.second = torch.nn.Conv3d(1, 3, 1), act, torch.nn.Conv3d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.first.weight.copy_(torch.tensor([1.0, -2.0, 0.5]).view(3, 1, 1, 1, 1))
            self.first.bias.copy_(torch.tensor([-0.3, 0.4, 0.1]))
            self.second.weight.copy_(torch.tensor([[2.0, -1.0, 3.0], [-1.0, 1.5, -0.5]]).view(2, 3, 1, 1, 1))

    def forward(self, x):
        return self.second(self.act(self.first(x)))


def _expected(net: PointwiseMLP, image: torch.Tensor, mask: torch.Tensor, c: int, guided: bool) -> torch.Tensor:
    """Σ_k w_k · f'(z_k) · (max(v_ck, 0) if guided else v_ck) on the mask, by hand."""
    w = net.first.weight.flatten()
    z = w.view(3, 1, 1, 1) * image + net.first.bias.view(3, 1, 1, 1)        # [3, *S]
    z = z.detach().requires_grad_(True)
    (slope,) = torch.autograd.grad(net.act(z[None] * 1).sum(), z)                    # f'(z) per unit
    v = net.second.weight[c].flatten()
    v = v.clamp_min(0) if guided else v
    return ((w * v).view(3, 1, 1, 1) * slope).sum(0).detach() * (mask == c)


@pytest.mark.parametrize("act", [torch.nn.ReLU(), torch.nn.LeakyReLU(0.1, inplace=True), torch.nn.PReLU(3, 0.2)],
                         ids=["relu", "leaky_inplace", "prelu"])
def test_known_answer_on_a_pointwise_network(act):
    net, image = PointwiseMLP(act).eval(), _image(seed=1) * 2 - 1
    mask = (image[0] > 0).long()
    guided = explain(net, image, "guided_backprop", mask=mask, device="cpu")[:, None]
    vanilla = explain(net, image, "vg", mask=mask, device="cpu")
    for c in (0, 1):
        torch.testing.assert_close(guided[c, 0], _expected(net, image, mask, c, True), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vanilla[c], _expected(net, image, mask, c, False), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(guided[:, 0], vanilla)                       # negative signals were dropped


def test_parity_with_captum_guided_backprop_on_a_relu_unet():
    from captum.attr import GuidedBackprop

    torch.manual_seed(0)
    net = build_network(RELU_UNET, 3).eval()
    assert any(isinstance(m, torch.nn.ReLU) for m in net.modules())
    assert not any(isinstance(m, torch.nn.PReLU) for m in net.modules())
    image = _image((16, 8, 8), seed=2)
    with torch.no_grad():
        mask = net(image[None])[0].argmax(0)

    class Score(torch.nn.Module):  # Captum's GuidedBackprop explains a module's [B, targets] output
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.stack([(self.net(x)[:, c] * (mask == c)).flatten(1).sum(1) for c in range(3)], 1)

    ours = explain(net, image, "guided_backprop", device="cpu")
    theirs = GuidedBackprop(Score()).attribute(image[None], target=1)[0, 0]
    torch.testing.assert_close(ours[1], theirs, rtol=1e-4, atol=1e-7)
    assert ours[1].abs().sum() > 0
    assert not torch.allclose(ours[1], explain(net, image, "vg", device="cpu")[1])


def test_monai_unets_prelu_is_guided_and_windows_work():
    torch.manual_seed(1)
    net = build_network({"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 1}}, 3).eval()
    assert any(isinstance(m, torch.nn.PReLU) for m in net.modules())     # MONAI's default activation
    image = _image((12, 8, 8), seed=3)
    guided = explain(net, image, "guided_backprop", roi_size=(8, 8, 8), device="cpu")
    vanilla = explain(net, image, "vg", roi_size=(8, 8, 8), device="cpu")
    assert guided.shape == vanilla.shape == (3, 12, 8, 8)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, vanilla)


def test_hooks_are_removed_even_when_the_call_fails():
    net, image = PointwiseMLP(torch.nn.ReLU()).eval(), _image()
    with pytest.raises(InputError, match="unknown parameter 'steps' for method 'guided_backprop'"):
        explain(net, image, "guided_backprop", steps=3)
    with pytest.raises(InputError):
        explain(net, image, "guided_backprop", aggregation="median", device="cpu")
    assert all(not m._forward_hooks for m in net.modules())
    torch.testing.assert_close(explain(net, image, "vg", device="cpu"),        # plain VG afterwards
                               explain(PointwiseMLP(torch.nn.ReLU()).eval(), image, "vg", device="cpu"))


def test_networks_without_activation_modules_and_torchscript_are_refused_in_one_line():
    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 2, 1)

        def forward(self, x):
            return torch.relu(self.conv(x))

    with pytest.raises(InputError, match="^guided_backprop: Functional has no activation module") as err:
        explain(Functional().eval(), _image(), "guided_backprop", device="cpu")
    assert "\n" not in str(err.value)
    scripted = torch.jit.trace(PointwiseMLP(torch.nn.ReLU()).eval(), torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(InputError, match="TorchScript"):
        explain(scripted, _image(), "guided_backprop", device="cpu")


def test_the_guided_activation_set_covers_our_networks():
    nets = [build_network({"name": "unet"}, 2), build_network({"name": "dynunet"}, 2),
            build_network({"name": "segresnet"}, 2)]
    for net in nets:
        acts = {type(m) for m in net.modules() if isinstance(m, torch.nn.Module) and
                type(m).__module__.startswith("torch.nn.modules.activation")}
        assert acts and acts <= set(GUIDED_ACTIVATIONS), acts
