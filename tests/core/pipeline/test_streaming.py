"""Gradient attributions streamed to a memory-mapped .npy, the padding adjoint, and autocast.

The streamed result must equal the in-memory one; the padded-window gradients must equal
autograd through MONAI for every padding mode; bf16 autocast must change the numbers a
little (the path is really taken) and not much.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agg2exp_core.attribution import explain, sinks
from agg2exp_core.errors import InputError
from tests.core.attribution.test_attribution import TinyNet, _few_threads, monai_sliding_vg  # noqa: F401 (autouse: one torch thread)

SHAPE = (10, 9, 8)


@pytest.fixture(scope="module")
def net():
    return TinyNet().eval()


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.rand((1,) + SHAPE, dtype=torch.float64)


WINDOW = {"roi_size": (6, 6, 6), "overlap": 0.25, "mode": "gaussian"}


@pytest.mark.parametrize("method, params", [("vg", {}), ("smoothgrad", {"n_samples": 3}), ("ig", {"steps": 4})])
def test_streamed_to_a_file_equals_in_memory(net, image, tmp_path, method, params):
    in_memory = explain(net, image, method, **WINDOW, **params)
    streamed = explain(net, image, method, out=tmp_path / "a" / "attr.npy", **WINDOW, **params)
    assert streamed.dtype == image.dtype and streamed.shape == in_memory.shape
    torch.testing.assert_close(streamed, in_memory, rtol=1e-12, atol=1e-14)
    on_disk = np.load(tmp_path / "a" / "attr.npy")  # the file stays and holds the result
    np.testing.assert_allclose(on_disk, in_memory.numpy(), rtol=1e-12, atol=1e-14)


def test_whole_volume_gradients_stream_too(net, image, tmp_path):
    torch.testing.assert_close(explain(net, image, "vg", out=tmp_path / "v.npy"), explain(net, image, "vg"),
                               rtol=1e-12, atol=1e-14)


def test_results_above_the_threshold_stream_to_an_unlinked_temporary_file(net, image, tmp_path, monkeypatch):
    opened = []

    class Spy(sinks.FileSink):
        def __init__(self, shape, dtype, path, keep):
            opened.append((path, keep))
            super().__init__(shape, dtype, path, keep)

    monkeypatch.setattr(sinks, "FileSink", Spy)
    monkeypatch.setattr(sinks.tempfile, "tempdir", str(tmp_path))
    expected = explain(net, image, "vg", **WINDOW)
    assert opened == []                                   # small: in memory
    monkeypatch.setattr(sinks, "STREAM_ABOVE_BYTES", 1000)  # 4 x 720 float64 = 23 kB is above
    got = explain(net, image, "vg", **WINDOW)
    assert len(opened) == 1 and opened[0][1] is False and opened[0][0].parent == tmp_path
    assert not opened[0][0].exists()                      # unlinked: the mapping holds the data
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("padding_mode", ["constant", "replicate", "circular", "reflect"])
def test_padded_window_gradients_match_monai_for_every_padding_mode(net, image, tmp_path, padding_mode):
    """Windows larger than the image on two axes: the adjoint of MONAI's padding."""
    roi, sw = (12, 6, 11), {"mode": "constant", "overlap": 0.3, "padding_mode": padding_mode}
    expected = monai_sliding_vg(net, image, roi, **sw)
    torch.testing.assert_close(explain(net, image, "vg", roi_size=roi, **sw), expected, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(explain(net, image, "vg", roi_size=roi, out=tmp_path / "p.npy", **sw), expected,
                               rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("out, problem", [(3, "expected a .npy path or None"), ("x.pt", "expected a .npy path")])
def test_bad_out_is_one_line(net, image, out, problem):
    with pytest.raises(InputError, match=problem):
        explain(net, image, "vg", out=out)


# ----------------------------------------------------------------------------- autocast
@pytest.fixture(scope="module")
def unet32():
    from agg2exp_core.models.networks import build_network

    torch.manual_seed(0)
    # no instance norm: its backward subtracts means, which bf16 turns into ~10 % errors
    return build_network({"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0,
                                                     "norm": None}}, 3).eval()


def test_bf16_autocast_on_cpu_is_close_to_float32_but_not_equal(unet32):
    torch.manual_seed(2)
    image = torch.rand((1, 16, 12, 12))
    window = {"roi_size": (8, 8, 8), "overlap": 0.25}
    f32 = explain(unet32, image, "vg", **window)
    bf16 = explain(unet32, image, "vg", autocast="bf16", **window)
    assert bf16.dtype == torch.float32 and bf16.shape == f32.shape
    error = (bf16 - f32).norm() / f32.norm()
    assert 1e-4 < error < 0.05, float(error)  # bf16 keeps 8 mantissa bits: ~1e-2, never 0


@pytest.mark.parametrize("kwargs, problem", [
    ({"autocast": "fp16"}, "fp16 needs a CUDA device"),
    ({"autocast": "int8"}, "expected one of bf16, fp16 or None"),
])
def test_bad_autocast_is_one_line(unet32, kwargs, problem):
    with pytest.raises(InputError, match=problem):
        explain(unet32, torch.rand((1, 8, 8, 8)), "vg", device="cpu", **kwargs)


def test_autocast_needs_a_float32_model(net, image):
    with pytest.raises(InputError, match="needs a float32 model, got torch.float64"):
        explain(net, image, "vg", autocast="bf16")


# ----------------------------------------------------------------------------- precompute
def test_precompute_with_a_scratch_dir_stores_the_same_and_leaves_no_files(tmp_path):
    from agg2exp_core import store
    from agg2exp_core.io.phantoms import generate_cohort
    from agg2exp_core.io.preprocessing import Preprocessing
    from agg2exp_core.labels import THORAX_LABELS
    from agg2exp_core.models import build_network, save_checkpoint
    from agg2exp_core.pipeline.precompute import precompute

    config = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
    manifest = generate_cohort(tmp_path / "cohort", n_reference=2, n_test=0, n_external=0,
                               shape=(24, 16, 16), spacing=(16.0, 16.0, 16.0), seed=4)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_network(config, len(THORAX_LABELS)), config,
                                 THORAX_LABELS, Preprocessing(spacing=None), roi_size=(16, 16, 16))
    rows = []
    for name, scratch in (("ram", None), ("file", tmp_path / "scratch")):
        db = tmp_path / f"{name}.duckdb"
        summary = precompute(manifest, checkpoint, db, "vg", device="cpu", progress=False, scratch_dir=scratch)
        assert len(summary.done) == 2 and not summary.failed
        with store.connect(db, read_only=True) as con:
            rows.append(con.execute("SELECT case_id, target_id, source_id, mass_abs FROM local_importance "
                                    "ORDER BY ALL").fetchall())
    assert rows[0] == rows[1] and len(rows[0]) >= 2 * 17 * 17
    assert [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()] == []
    with pytest.raises(InputError, match="'out' and 'sample_maps' are chosen per case by precompute"):
        precompute(manifest, checkpoint, tmp_path / "x.duckdb", "vg", params={"out": "a.npy"}, progress=False)
