"""Our gradient attributions equal Captum's on the aggregated class score (Agg2Exp, Eq. 2).

Captum explains a scalar per target; the aggregated score ``f̂_c(x) = Σ_v f_c(x)[v] ŷ_c[v]``
with the clean prediction's mask ``ŷ_c`` fixed is a small wrapper module ``x -> [B, l]``
(as ``benchmarks/attribution_speed.py`` times it). VG = ``Saliency(abs=False)``, SmoothGrad =
``NoiseTunnel(Saliency)`` with the same noise draws (Captum after ``torch.manual_seed(seed)``
draws what our private generator draws when the voxel count is a multiple of 16), IG =
``IntegratedGradients`` with the same quadrature rule. Float64 throughout, so the bound is
round-off, not float32 noise (Captum's IG weights are float32: 1e-6 there).
"""
from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from agg2exp_core.attribution import explain

captum_attr = pytest.importorskip("captum.attr")

N_CLASSES = 4
SHAPE = (8, 8, 8)  # 512 voxels: a multiple of 16, so Captum's vectorised normal draws match ours
SEED = 3


class AggregatedScore(torch.nn.Module):
    """``[B,1,*S] -> [B,l]``: each class's logits summed over its fixed predicted mask."""

    def __init__(self, net: torch.nn.Module, labels: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("onehot", torch.nn.functional.one_hot(labels, N_CLASSES).movedim(-1, 0).double())

    def forward(self, x):
        return (self.net(x) * self.onehot).flatten(2).sum(-1)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=(4, 8), strides=(2,),
               num_res_units=1).double().eval()
    image = torch.rand((1, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        labels = net(image[None])[0].argmax(0)
    classes = labels.unique().tolist()
    assert len(classes) >= 2, "the set-up must explain several classes"
    return net, image, labels, classes, AggregatedScore(net, labels).eval()


def captum_rows(attribute, classes) -> torch.Tensor:
    return torch.stack([attribute(c)[0, 0].detach() for c in classes])


def assert_equal_to_captum(ours: torch.Tensor, theirs: torch.Tensor, relative: float = 1e-12) -> None:
    """Equal up to ``relative`` times the largest attribution (float64 round-off by default)."""
    assert theirs.abs().max() > 0, "an all-zero reference would prove nothing"
    torch.testing.assert_close(ours, theirs, rtol=0, atol=relative * float(theirs.abs().max()))


def test_vanilla_gradient_equals_captums_saliency(setup):
    net, image, labels, classes, score = setup
    ours = explain(net, image, "vg", classes=classes, mask=labels, device="cpu")
    saliency = captum_attr.Saliency(score)
    theirs = captum_rows(lambda c: saliency.attribute(image[None], target=c, abs=False), classes)
    assert_equal_to_captum(ours, theirs)


@pytest.mark.parametrize("our_batch, their_batch", [(5, 5), (2, 3)])
def test_smoothgrad_equals_captums_noise_tunnel_with_the_same_noise(setup, our_batch, their_batch):
    """Same draws whatever either side's batch size: the noise depends on the seed only."""
    net, image, labels, classes, score = setup
    n, sigma = 5, 0.2
    ours = explain(net, image, "smoothgrad", classes=classes, mask=labels, device="cpu", n_samples=n,
                   sigma=sigma, seed=SEED, batch_size=our_batch)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(score))
    stdev = sigma * float(image.max() - image.min())

    def attribute(c):
        torch.manual_seed(SEED)  # our noise does not depend on the class: the same draws for each
        return tunnel.attribute(image[None], nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=their_batch,
                                stdevs=stdev, target=c, abs=False)

    theirs = captum_rows(attribute, classes)
    assert_equal_to_captum(ours, theirs)
    vanilla = explain(net, image, "vg", classes=classes, mask=labels, device="cpu")
    assert (ours - vanilla).abs().max() > 1e-3 * vanilla.abs().max(), "the noise must change the gradient"


# Captum's trapezoid puts its n nodes 1/(n-1) apart but weighs them 1/n (ends 1/(2n)), so its
# weights sum to (n-1)/n; ours are the trapezoid rule's (sum 1), hence the factor.
CAPTUM_WEIGHT_SUM = {"gausslegendre": lambda n: 1.0, "riemann_right": lambda n: 1.0,
                     "riemann_middle": lambda n: 1.0, "riemann_trapezoid": lambda n: (n - 1) / n}


@pytest.mark.parametrize("rule", sorted(CAPTUM_WEIGHT_SUM))
def test_integrated_gradients_equal_captums_for_the_same_rule(setup, rule):
    net, image, labels, classes, score = setup
    steps, baseline = 6, 0.25
    ours = explain(net, image, "ig", classes=classes, mask=labels, device="cpu", steps=steps, baseline=baseline,
                   rule=rule, batch_size=4)
    ig = captum_attr.IntegratedGradients(score)
    theirs = captum_rows(lambda c: ig.attribute(image[None], baselines=baseline, target=c, n_steps=steps,
                                                method=rule, internal_batch_size=4), classes)
    # Captum rounds the quadrature weights to float32 (``torch.tensor(step_sizes).float()``),
    # a relative error of ~6e-8 per weight; ours stay float64.
    assert_equal_to_captum(ours * CAPTUM_WEIGHT_SUM[rule](steps), theirs, relative=1e-6)
    wrong_rule = explain(net, image, "ig", classes=classes, mask=labels, device="cpu", steps=steps,
                         baseline=baseline, rule="riemann_left" if rule != "riemann_left" else "riemann_right")
    assert (wrong_rule - theirs).abs().max() > 1e-4 * theirs.abs().max(), "the rule must matter at this tolerance"
