"""Gradient attributions of the aggregated class function (agg2exp_core.attribution).

A tiny smooth 3D conv net in float64 makes finite differences and exact comparisons
meaningful; everything here runs in a few seconds on CPU.
"""
from __future__ import annotations


import pytest
import torch
from monai.inferers import sliding_window_inference

from agg2exp_core.attribution import explain, ig_quadrature

N_LABELS = 4
SHAPE = (10, 9, 8)


class TinyNet(torch.nn.Module):
    """Two 3x3x3 convolutions with a smooth nonlinearity: ``[B,1,*S] -> [B,4,*S]``."""

    def __init__(self, empty_class: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv3d(1, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv3d(6, N_LABELS, 3, padding=1)
        if empty_class is not None:  # a class that is never predicted
            with torch.no_grad():
                self.conv2.bias[empty_class] = -100.0
        self.double()

    def forward(self, x):
        return self.conv2(torch.nn.functional.softplus(self.conv1(x)) * 2.0)


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def net():
    return TinyNet().eval()


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.rand((1,) + SHAPE, dtype=torch.float64)


def labels_of(net, image):
    with torch.no_grad():
        return net(image[None])[0].argmax(0)


def aggregated(net, x, labels, c, aggregation="sum"):
    """f̂_c(x) with the mask fixed to ``labels``: a scalar."""
    mask = (labels == c).to(x.dtype)
    value = (net(x[None])[0, c] * mask).sum()
    return value / mask.sum() if aggregation == "mean" else value


def test_classes_present(net, image):
    """The fixtures exercise several non-empty classes."""
    assert labels_of(net, image).unique().numel() >= 3


# --------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_vg_equals_central_finite_differences(net, image, aggregation):
    attributions = explain(net, image, "vg", aggregation=aggregation)
    labels, eps = labels_of(net, image), 1e-5
    voxels = [(0, 0, 0, 0), (0, 5, 4, 3), (0, 9, 8, 7), (0, 2, 7, 1)]
    with torch.no_grad():
        for c in labels.unique().tolist():
            for v in voxels:
                up, down = image.clone(), image.clone()
                up[v] += eps
                down[v] -= eps
                fd = (aggregated(net, up, labels, c, aggregation) - aggregated(net, down, labels, c, aggregation)) / (2 * eps)
                assert attributions[(c,) + v[1:]].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_trapezoid"])
def test_ig_completeness(net, image, rule):
    """Σ_v IG = f̂(x) − f̂(x') within 2% at 200 steps (mask from the clean prediction)."""
    baseline = 0.2
    attributions = explain(net, image, "ig", steps=200, baseline=baseline, rule=rule, batch_size=50)
    labels = labels_of(net, image)
    with torch.no_grad():
        for c in labels.unique().tolist():
            expected = aggregated(net, image, labels, c) - aggregated(net, torch.full_like(image, baseline), labels, c)
            assert attributions[c].sum().item() == pytest.approx(expected.item(), rel=0.02)


def test_ig_quadrature_weights_sum_to_one():
    for rule in ["gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right"]:
        alphas, weights = ig_quadrature(rule, 7)
        assert sum(weights) == pytest.approx(1.0) and all(0 <= a <= 1 for a in alphas)
    assert ig_quadrature("riemann_right", 4)[0] == [0.25, 0.5, 0.75, 1.0]  # the paper's Eq. 5


def test_ig_tensor_baseline_equals_scalar(net, image):
    scalar = explain(net, image, "ig", steps=5, baseline=0.3)
    tensor = explain(net, image, "ig", steps=5, baseline=torch.full(SHAPE, 0.3, dtype=torch.float64))
    torch.testing.assert_close(scalar, tensor)


def test_smoothgrad_small_sigma_equals_vg(net, image):
    vg = explain(net, image, "vg")
    sg = explain(net, image, "smoothgrad", sigma=1e-9, n_samples=3)
    torch.testing.assert_close(sg, vg, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method,params", [
    ("vg", {}),
    ("smoothgrad", {"n_samples": 5, "batch_size": 2}),
    ("ig", {"steps": 6, "batch_size": 4, "rule": "riemann_middle"}),
    ("vg", {"aggregation": "mean"}),
])
def test_all_classes_equal_per_class_loop(net, image, method, params):
    together = explain(net, image, method, **params)
    one_by_one = torch.stack([explain(net, image, method, classes=[c], **params)[0] for c in range(N_LABELS)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-10)


def test_smoothgrad_is_mean_of_vg_on_its_noisy_copies(net, image):
    """SmoothGrad = mean VG over noisy copies, with the mask of the clean image."""
    n, sigma, seed = 3, 0.2, 7
    labels = labels_of(net, image)
    std = torch.tensor(sigma * float(image.max() - image.min()), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    noisy = [image + (torch.randn(image.shape, generator=gen) * std).double() for _ in range(n)]
    expected = sum(explain(net, x, "vg", mask=labels) for x in noisy) / n
    got = explain(net, image, "smoothgrad", n_samples=n, sigma=sigma, seed=seed)
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- sliding window
def monai_sliding_vg(net, image, roi_size, aggregation="sum", **sw):
    """Reference: autograd through the whole of MONAI's sliding_window_inference."""
    with torch.no_grad():
        labels = sliding_window_inference(image[None], roi_size, 1, net, **sw)[0].argmax(0)
    x = image[None].clone().requires_grad_(True)
    fused = sliding_window_inference(x, roi_size, 1, net, **sw)[0]
    rows = []
    for c in range(N_LABELS):
        mask = (labels == c).double()
        value = (fused[c] * mask).sum() / (mask.sum().clamp_min(1) if aggregation == "mean" else 1)
        rows.append(torch.autograd.grad(value, x, retain_graph=True)[0][0, 0])
    return torch.stack(rows)


@pytest.mark.parametrize("roi_size,sw", [
    ((6, 6, 6), {"mode": "gaussian", "overlap": 0.25}),
    ((6, 5, 4), {"mode": "constant", "overlap": 0.5}),
    ((12, 6, 6), {"mode": "gaussian", "overlap": 0.25}),                          # padded in x
    ((12, 6, 10), {"mode": "constant", "overlap": 0.3, "padding_mode": "reflect"}),  # pad flows to x
])
@pytest.mark.parametrize("sw_batch_size", [1, 3])
def test_sliding_window_gradients_match_monai_autograd(net, image, roi_size, sw, sw_batch_size):
    got = explain(net, image, "vg", roi_size=roi_size, sw_batch_size=sw_batch_size, **sw)
    torch.testing.assert_close(got, monai_sliding_vg(net, image, roi_size, **sw), rtol=1e-5, atol=1e-10)


def test_sliding_window_mean_aggregation_and_ig(net, image):
    roi, sw = (6, 6, 6), {"mode": "gaussian", "overlap": 0.25}
    got = explain(net, image, "vg", roi_size=roi, aggregation="mean", **sw)
    torch.testing.assert_close(got, monai_sliding_vg(net, image, roi, aggregation="mean", **sw), rtol=1e-5, atol=1e-10)
    # IG through windows is complete with respect to the fused (sliding-window) logits.
    ig = explain(net, image, "ig", roi_size=roi, steps=100, **sw)
    with torch.no_grad():
        fused = sliding_window_inference(image[None], roi, 1, net, **sw)[0]
        labels = fused.argmax(0)
        zero = sliding_window_inference(torch.zeros_like(image)[None], roi, 1, net, **sw)[0]
    for c in labels.unique().tolist():
        expected = ((fused[c] - zero[c]) * (labels == c)).sum()
        assert ig[c].sum().item() == pytest.approx(expected.item(), rel=0.02)


def test_sliding_window_without_overlap_padding_equals_direct_when_roi_is_image(net, image):
    """A window the size of the image is the plain network."""
    torch.testing.assert_close(explain(net, image, "vg", roi_size=SHAPE), explain(net, image, "vg"))


# --------------------------------------------------------------------------- contract
def test_deterministic_for_a_seed(net, image):
    a = explain(net, image, "smoothgrad", n_samples=4, seed=3)
    b = explain(net, image, "smoothgrad", n_samples=4, seed=3, batch_size=3)
    c = explain(net, image, "smoothgrad", n_samples=4, seed=4)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)  # noise does not depend on batching
    assert torch.equal(a, explain(net, image, "smoothgrad", n_samples=4, seed=3))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("method", ["vg", "smoothgrad", "ig"])
def test_output_shape_dtype_device(image, method):
    net32 = TinyNet().float().eval()
    out32 = explain(net32, image.float(), method, n_samples=2) if method == "smoothgrad" else explain(net32, image.float(), method)
    assert out32.shape == (N_LABELS,) + SHAPE and out32.dtype == torch.float32 and out32.device.type == "cpu"
    # a float64 image with a float32 model: computed in float32, returned in float64
    out64 = explain(net32, image, method, classes=[1, 2], device="cpu", **({"n_samples": 2} if method == "smoothgrad" else {}))
    assert out64.shape == (2,) + SHAPE and out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32[1:3], rtol=1e-4, atol=1e-6)


def test_classes_subset_keeps_order(net, image):
    full = explain(net, image, "vg")
    torch.testing.assert_close(explain(net, image, "vg", classes=[3, 0]), full[[3, 0]])
    torch.testing.assert_close(explain(net, image, "vg", classes=2), full[[2]])


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_empty_class_gives_zeros(image, aggregation):
    model = TinyNet(empty_class=2).eval()
    out = explain(model, image, "ig", steps=3, aggregation=aggregation)
    assert not labels_of(model, image).eq(2).any()
    assert torch.count_nonzero(out[2]) == 0 and torch.count_nonzero(out[0]) > 0


def test_given_mask_skips_clean_forward(net, image):
    labels = labels_of(net, image)
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return net(x)

    expected = explain(net, image, "smoothgrad", n_samples=4, batch_size=4)
    got = explain(counting, image, "smoothgrad", n_samples=4, batch_size=4, mask=labels)
    torch.testing.assert_close(got, expected)
    assert calls == [4]  # one forward pass for the whole batch, none for the mask, none per class


def test_runs_under_no_grad_and_leaves_parameters_alone(net, image):
    expected = explain(net, image, "vg")
    with torch.no_grad():
        got = explain(net, image, "vg")
    torch.testing.assert_close(got, expected)
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    frozen = TinyNet().eval().requires_grad_(False)
    torch.testing.assert_close(explain(frozen, image, "vg"), expected)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_kernelshap_is_dispatched_with_the_common_names(net, image):
    from agg2exp_core.attribution.kernelshap import kernelshap_explain

    cubes = dict(partition="cubes", n_per_axis=2, n_coalitions=2 ** 8)
    got = explain(net, image, "kernelshap", classes=[1], **cubes)
    torch.testing.assert_close(got, kernelshap_explain(net, image, [1], **cubes))
    # one dialect: the clean mask and the aggregation have the same names as for the gradients
    labels = labels_of(net, image)
    torch.testing.assert_close(explain(net, image, "kernelshap", classes=[1], mask=labels, **cubes), got)
    mean = explain(net, image, "kernelshap", classes=[1], aggregation="mean", **cubes)
    torch.testing.assert_close(mean * (labels == 1).sum(), got)


@pytest.mark.parametrize("args,kwargs,source", [
    ((torch.rand(SHAPE, dtype=torch.float64), "vg"), {}, "image"),             # no channel dim
    ((torch.rand((1, 1) + SHAPE, dtype=torch.float64), "vg"), {}, "image"),    # batch dim
    ((torch.zeros((1,) + SHAPE, dtype=torch.int64), "vg"), {}, "image"),       # not floating
    ((None, "lrp"), {}, "method"),
    ((None, "vg"), {"n_steps": 5}, "explain"),                                  # unknown parameter
    ((None, "ig"), {"rule": "simpson"}, "rule"),
    ((None, "smoothgrad"), {"n_samples": 0}, "n_samples"),
    ((None, "vg"), {"classes": [7]}, "classes"),
    ((None, "vg"), {"classes": [-1]}, "classes"),
    ((None, "vg"), {"mask": torch.zeros(3, 3, 3)}, "mask"),
    ((None, "vg"), {"roi_size": (4, 4)}, "roi_size"),
    ((None, "vg"), {"aggregation": "median"}, "aggregation"),
    ((None, "ig"), {"baseline": torch.zeros(2, 2)}, "baseline"),
])
def test_bad_input_raises_one_line_value_error(net, image, args, kwargs, source):
    img, method = args
    with pytest.raises(ValueError) as err:
        explain(net, image if img is None else img, method, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{source}: ") and "\n" not in message


def test_model_with_wrong_output_shape_raises(image):
    with pytest.raises(ValueError, match="^model: expected logits"):
        explain(lambda x: x.mean(dim=(2, 3, 4)), image, "vg")
