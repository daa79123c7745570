"""Sliding-window geometry and inference: ``WindowSpec`` reproduces MONAI exactly."""
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from agg2exp_core.models.inference import WindowSpec, infer_logits, predict_logits

torch.set_num_threads(1)


def tiny_net(seed=0, classes=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Conv3d(4, classes, 3, padding=1)).eval()


@pytest.mark.parametrize("shape,roi,overlap", [((96, 64, 64), (48, 48, 48), 0.25), ((40, 33, 20), (20, 33, 16), 0.5),
                                               ((10, 30, 7), (16, 16, 16), 0.25)])
def test_window_grid_is_monais(shape, roi, overlap):
    geometry = WindowSpec(roi, overlap).geometry(shape)
    padded = tuple(max(s, r) for s, r in zip(shape, roi))
    assert geometry.padded_shape == padded
    interval = _get_scan_interval(padded, roi, 3, (overlap,) * 3)
    monai = [tuple(slice(int(s.start), int(s.stop)) for s in sl) for sl in dense_patch_slices(padded, roi, interval)]
    assert list(geometry.slices) == monai


@pytest.mark.parametrize("shape,padding_mode", [((20, 18, 14), "constant"), ((10, 9, 14), "constant"),
                                                ((10, 9, 14), "replicate")])
def test_geometry_fuses_windows_exactly_as_monai(shape, padding_mode):
    """Σ_w imp_w · y_w / count, from the geometry alone, equals MONAI's output."""
    net = tiny_net()
    x = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = WindowSpec((12, 12, 12), 0.25, padding_mode=padding_mode, sw_batch_size=2)
    net = net.double()
    expected = sliding_window_inference(x, spec.roi_size, 2, net, overlap=0.25, mode="gaussian",
                                        padding_mode=padding_mode)
    geometry = spec.geometry(shape)
    padded = geometry.pad(x)
    importance = geometry.importance("cpu", torch.float64)
    fused = torch.zeros((1, 3, *geometry.padded_shape), dtype=torch.float64)
    with torch.no_grad():
        for s in geometry.slices:
            fused[(slice(None), slice(None), *s)] += importance * net(padded[(slice(None), slice(None), *s)])
    fused /= geometry.count("cpu", torch.float64)
    crop = tuple(slice(b, b + n) for b, n in zip(geometry.pad_before, shape))
    torch.testing.assert_close(fused[(slice(None), slice(None), *crop)], expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(infer_logits(net, x, spec), expected)


def test_support_holds_every_window_that_reads_a_box():
    spec = WindowSpec((12, 12, 12), 0.25)
    geometry = spec.geometry((40, 30, 20))
    box = (slice(2, 5), slice(3, 6), slice(2, 4))
    support = geometry.support(box)
    for i in geometry.windows_meeting(box):
        window = [slice(s.start - b, s.stop - b) for s, b in zip(geometry.slices[i], geometry.pad_before)]
        assert all(max(w.start, 0) >= s.start and min(w.stop, n) <= s.stop
                   for w, s, n in zip(window, support, (40, 30, 20)))
    assert support != tuple(slice(0, n) for n in (40, 30, 20))  # a corner box needs only part of the volume


def test_predict_logits_whole_volume_and_windowed():
    net = tiny_net()
    image = torch.rand(1, 16, 14, 12, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(predict_logits(net, image), net(image[None])[0].detach())
    spec = WindowSpec((8, 8, 8), 0.5)
    expected = sliding_window_inference(image[None], (8, 8, 8), 1, net, overlap=0.5, mode="gaussian")[0]
    torch.testing.assert_close(predict_logits(net, image, spec), expected)


@pytest.mark.parametrize("kwargs,source", [({"roi_size": "96"}, "roi_size"), ({"roi_size": (8, 8, 8), "overlap": 1.0}, "overlap"),
                                           ({"roi_size": (8, 8, 8), "mode": "median"}, "mode"),
                                           ({"roi_size": (8, 8, 8), "padding_mode": "zeros"}, "padding_mode"),
                                           ({"roi_size": (8, 8, 8), "sw_batch_size": 0}, "sw_batch_size"),
                                           ({"roi_size": (8, 8, 8), "cval": float("nan")}, "cval")])
def test_bad_window_settings_are_one_line_errors(kwargs, source):
    with pytest.raises(ValueError) as err:
        WindowSpec(**kwargs)
    assert str(err.value).startswith(f"{source}: ") and "\n" not in str(err.value)
