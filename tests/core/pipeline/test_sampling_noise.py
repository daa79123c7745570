"""SmoothGrad's sampling noise per matrix cell (issue 13 d): the per-sample path of the explainer,
the jackknife estimator and the rows precompute writes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agg2exp_core import store
from agg2exp_core.aggregate import local_matrices, sampling_noise
from agg2exp_core.attribution import explain
from agg2exp_core.attribution.sinks import SampleMaps
from agg2exp_core.errors import InputError
from agg2exp_core.pipeline import noise_stage
from tests.core.attribution.test_attribution import N_LABELS, SHAPE, TinyNet, _few_threads  # noqa: F401 (autouse: one torch thread)


def _direct_jackknife(samples: np.ndarray, labels: np.ndarray, n_rois: int, kind: str) -> np.ndarray:
    """The textbook jackknife, one leave-one-out mean (n·mean − a_s)/(n − 1) at a time."""
    n = len(samples)
    mean = samples.mean(0)
    thetas = np.stack([local_matrices((n * mean - samples[s]) / (n - 1), labels, n_rois)[kind] for s in range(n)])
    return np.sqrt((n - 1) / n * ((thetas - thetas.mean(0)) ** 2).sum(0))


def test_jackknife_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(5, 2, 6, 5, 4)) + 0.3  # n, k, *S: signed, so pos/neg differ from abs
    labels = rng.integers(0, 3, size=(6, 5, 4))
    got = sampling_noise(samples, labels, 3)
    for kind in ("abs", "pos", "neg"):
        np.testing.assert_allclose(got[kind], _direct_jackknife(samples, labels, 3, kind), rtol=1e-10)
        assert got[kind].shape == (2, 3) and (got[kind] > 0).all()


def test_a_fraction_linear_in_the_mean_has_the_standard_error_of_the_mean():
    """Each sample puts mass m_s in region 0 and 1 − m_s in region 1: the fraction of the mean is mean(m)."""
    m = np.array([0.1, 0.4, 0.35, 0.7, 0.2, 0.5])
    labels = np.array([0, 1])
    samples = np.stack([[[ms, 1 - ms]] for ms in m])  # [n, 1, 2]: a 1-D "volume" of two voxels
    se = sampling_noise(samples[..., None, None], labels[:, None, None], 2)["abs"]
    np.testing.assert_allclose(se[0], [m.std(ddof=1) / np.sqrt(len(m))] * 2, rtol=1e-12)


def test_identical_samples_have_no_noise_and_one_sample_is_refused():
    sample = np.random.default_rng(1).normal(size=(2, 4, 4, 4))
    se = sampling_noise(np.stack([sample] * 4), np.arange(64).reshape(4, 4, 4) % 3, 3)
    assert all(np.allclose(v, 0.0, atol=1e-12) for v in se.values())
    with pytest.raises(ValueError, match="at least 2 samples"):
        sampling_noise(sample[None], np.zeros((4, 4, 4), int), 3)


def test_more_samples_shrink_the_error_as_one_over_root_n():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=(8, 8, 4))
    base = rng.normal(size=(1, 8, 8, 4))

    def mean_se(n: int) -> float:
        return np.mean([sampling_noise(base + rng.normal(size=(n, 1, 8, 8, 4)), labels, 4)["abs"].mean()
                        for _ in range(8)])

    ratio = mean_se(8) / mean_se(32)
    assert 1.6 < ratio < 2.5  # sqrt(32 / 8) = 2


@pytest.mark.parametrize("window", [{}, {"roi_size": (6, 6, 6), "overlap": 0.5}])
def test_per_sample_maps_sum_to_the_smoothgrad_attribution(window):
    net = TinyNet().eval()
    torch.manual_seed(1)
    image = torch.rand((1,) + SHAPE, dtype=torch.float64)
    params = dict(n_samples=5, sigma=0.2, seed=3, batch_size=2, **window)
    default = explain(net, image, "smoothgrad", **params)
    recorder = SampleMaps()
    recorded = explain(net, image, "smoothgrad", sample_maps=recorder, **params)
    assert torch.equal(recorded, default)  # recording changes nothing in the result
    assert recorder.maps.shape == (5, N_LABELS, *SHAPE)
    torch.testing.assert_close(recorder.maps.sum(0).double(), default, rtol=0, atol=1e-6)
    assert not torch.allclose(recorder.maps[0], recorder.maps[1])  # different noise, different maps
    with pytest.raises(InputError, match="sample_maps"):
        explain(net, image, "smoothgrad", sample_maps="yes", **params)
    with pytest.raises(InputError, match="sample_maps"):
        explain(net, image, "vg", sample_maps=recorder)


def test_recorder_only_for_smoothgrad_with_two_samples_and_within_the_memory_limit():
    assert noise_stage.recorder_for("vg", {}, 3, (8, 8, 8)) == (None, None)
    assert noise_stage.recorder_for("smoothgrad", {"n_samples": 1}, 3, (8, 8, 8)) == (None, None)
    recorder, note = noise_stage.recorder_for("smoothgrad", {"n_samples": 2}, 3, (8, 8, 8))
    assert isinstance(recorder, SampleMaps) and note is None
    recorder, note = noise_stage.recorder_for("smoothgrad", {}, 17, (300, 300, 250))  # 20 samples: 23 GB
    assert recorder is None and "sampling noise skipped" in note and "limit 512 MiB" in note


def test_noise_rows_clip_the_interval_to_a_fraction():
    from scipy.stats import norm

    from agg2exp_core.vocabulary import SAMPLING_NOISE_LEVEL, SAMPLING_NOISE_Z
    assert SAMPLING_NOISE_Z == pytest.approx(norm.ppf(0.5 + SAMPLING_NOISE_LEVEL / 2), abs=1e-6)
    noise = noise_stage.CaseNoise({"abs": np.array([[0.1, np.nan]])}, 4)
    rows = noise_stage.noise_rows("r", "c", noise, {"abs": np.array([[0.05, 0.5]])}, [7], [7, 8])
    assert rows == [["r", "c", 7, 7, "abs", 0.1, 0.0, pytest.approx(0.05 + 1.959964 * 0.1), 4]]


def test_precompute_writes_sampling_noise_for_smoothgrad_only(tmp_path):
    from agg2exp_core.pipeline.precompute import precompute
    from cohorts import tiny_phantom_cohort

    manifest, checkpoint = tiny_phantom_cohort(tmp_path)
    cases = ["ref-000"]
    db = tmp_path / "s.duckdb"
    sg = precompute(manifest, checkpoint, db, "smoothgrad", {"n_samples": 3, "sigma": 0.1}, classes=[1, 2],
                    device="cpu", progress=False, case_ids=cases)
    vg = precompute(manifest, checkpoint, db, "vg", classes=[1, 2], device="cpu", progress=False, case_ids=cases)
    with store.connect(db, read_only=True) as con:
        noise = con.execute("SELECT * FROM sampling_noise").df()
        masses = con.execute("SELECT * FROM local_importance WHERE run_id = ?", [sg.run_id]).df()
    assert set(noise.run_id) == {sg.run_id} and vg.run_id not in set(noise.run_id)
    assert set(noise.kind) == {"abs", "pos", "neg", "lift"} and (noise.n_samples == 3).all()  # lift: stats-mass
    abs_rows = noise[noise.kind == "abs"].merge(masses, on=["case_id", "target_id", "source_id"])
    assert len(abs_rows) == len(masses.dropna(subset=["mass_abs"]))  # one SE per stored cell
    assert (abs_rows.se >= 0).all() and (abs_rows.se > 0).any()
    assert (abs_rows.low <= abs_rows.mass_abs + 1e-12).all() and (abs_rows.mass_abs <= abs_rows.high + 1e-12).all()


def test_precompute_refuses_sample_maps_in_params(tmp_path):
    from agg2exp_core.pipeline.precompute import precompute

    with pytest.raises(InputError, match="sample_maps"):
        precompute(tmp_path / "none.csv", "none.pt", tmp_path / "x.duckdb", "smoothgrad", {"sample_maps": 1})
