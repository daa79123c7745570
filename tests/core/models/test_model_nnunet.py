"""nnU-Net v2 folders: our model equals nnU-Net's own predictor; its window, preprocessing
and export path are nnU-Net's; gradients through its tile fusion are exact.

Model folders are written locally with random weights (tests/support/model_folders.py).
"""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'support'))
import model_folders as mf  # noqa: E402

from agg2exp_core.attribution import explain  # noqa: E402
from agg2exp_core.errors import InputError  # noqa: E402
from agg2exp_core.io.images import load_case, load_nifti  # noqa: E402
from agg2exp_core.models.inference import fused_logits  # noqa: E402
from agg2exp_core.models.nnunet_window import NnUNetWindow  # noqa: E402
from agg2exp_core.models.sources import load_model  # noqa: E402

pytest.importorskip("nnunetv2")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet_scans")
    return [mf.write_scan(root, seed) for seed in range(2)]


# Tests on two_folds are slow: the fixture trains two nnU-Net folds, ~75 s of a 2-core machine under
# load (~15 s idle), and the mirrored prediction takes ~100 s more there (pytest.ini's tiers).
TRAINS = pytest.mark.slow


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory, scans):
    """Two folds trained for seconds on the scans (a random network predicts almost no foreground)."""
    return mf.write_nnunet(tmp_path_factory.mktemp("nnunet") / "Dataset999", folds=(0, 1), train_on=scans)


def nnunet_predictor(folder: Path, folds, mirroring=False, step=0.5):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    with contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(tile_step_size=step, use_mirroring=mirroring, perform_everything_on_device=False,
                                    device=torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds,
                                                       checkpoint_name="checkpoint_final.pth")
    return predictor


def read_like_nnunet(image: Path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    return SimpleITKIO().read_images([str(image)])


def foreground_dice(a: np.ndarray, b: np.ndarray, labels=(1, 2)) -> float:
    return float(np.mean([2 * ((a == c) & (b == c)).sum() / max((a == c).sum() + (b == c).sum(), 1) for c in labels]))


@TRAINS
@pytest.mark.parametrize("mirroring", [False, True])
def test_prediction_matches_nnunets_predictor_on_the_original_grid(two_folds, scans, mirroring):
    """Two folds ensembled (and mirrored): >= 99.5 % of voxels and foreground Dice >= 0.99
    against nnUNetPredictor (which accumulates in float16), on the scan's own voxels."""
    model = load_model(two_folds, device="cpu", mirroring=mirroring)
    assert model.network_config["folds"] == [0, 1] and model.source == "nnunet"
    predictor = nnunet_predictor(two_folds, (0, 1), mirroring)
    for image, _ in scans:
        volume, affine = load_nifti(image)
        x, _ = model.preprocessing.image(volume, affine)
        ours = model.preprocessing.to_scan(model.predict(x).numpy(), volume, affine).argmax(0)
        data, props = read_like_nnunet(image)
        theirs = predictor.predict_single_npy_array(data, props, None, None, False).transpose(2, 1, 0)
        assert ours.shape == volume.shape
        assert (ours == theirs).mean() >= 0.995
        assert foreground_dice(ours, theirs) >= 0.99
        assert len(np.unique(theirs)) == 3  # the comparison is not between two empty maps


def test_preprocessing_is_nnunets_own_and_its_grid_is_world_aligned(tmp_path, scans):
    """Our network input equals nnU-Net's preprocessor on its SimpleITK reading, and the
    affine of nnU-Net's grid places its voxels where the scan's intensities are."""
    folder = mf.write_nnunet(tmp_path / "transposed", transpose=(2, 0, 1))
    model = load_model(folder, device="cpu")
    image, _ = scans[0]
    volume, affine = load_nifti(image)
    x, grid = model.preprocessing.image(volume, affine)
    predictor = nnunet_predictor(folder, (0,))
    data, props = read_like_nnunet(image)
    expected, _, _ = predictor.configuration_manager.preprocessor_class(verbose=False).run_case_npy(
        data, None, props, predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json)
    np.testing.assert_array_equal(x.numpy(), expected)
    # a linear field of world coordinates survives cubic resampling: G's affine must say where each voxel is
    world = (affine @ np.stack([*np.indices(volume.shape), np.ones(volume.shape)]).reshape(4, -1))[:3]
    field = (world.T @ np.array([1.5, -2.0, 4.0])).reshape(volume.shape).astype(np.float32) / 20
    plans_manager = model.preprocessing.plans_manager  # no clipping or scaling of the field
    plans_manager.plans["foreground_intensity_properties_per_channel"]["0"].update(
        {"percentile_00_5": -1e4, "percentile_99_5": 1e4, "mean": 0.0, "std": 1.0})
    resampled, grid = model.preprocessing.image(field, affine)
    g = np.indices(resampled.shape[1:]).reshape(3, -1)
    at = (grid @ np.vstack([g, np.ones(g.shape[1])]))[:3].T @ np.array([1.5, -2.0, 4.0]) / 20
    # away from the edges, where the cubic spline's edge mode bends the line (one voxel off: ~0.3)
    inner = np.all((g >= 5) & (g < np.array(resampled.shape[1:])[:, None] - 5), axis=0)
    assert inner.sum() >= 50
    np.testing.assert_allclose(resampled.numpy().reshape(-1)[inner], at[inner], atol=1e-3)


@TRAINS
def test_labels_follow_nnunets_steps_and_go_back_by_its_export_path(two_folds, scans):
    model = load_model(two_folds, device="cpu", fold="0")
    image, seg = scans[0]
    case = load_case({"case_id": "a", "image": str(image), "label": str(seg)}, model.preprocessing, n_labels=3)
    assert case.label.shape == case.image.shape[1:]
    label, _ = load_nifti(seg)
    one_hot = np.stack([case.label.numpy() == c for c in range(3)]).astype(np.float32)
    back = model.preprocessing.to_scan(one_hot, *load_nifti(image)).argmax(0)
    assert (back == label).mean() > 0.97  # resampled there and back at ~2.5 mm


def test_window_is_nnunets_geometry():
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    window = NnUNetWindow((12, 12, 8), 0.5)
    for shape in [(30, 19, 22), (10, 12, 5)]:
        geometry = window.geometry(shape)
        padded, revert = pad_nd_image(torch.zeros(1, *shape), (12, 12, 8), "constant", {"value": 0}, True)
        assert geometry.padded_shape == tuple(padded.shape[1:])
        assert tuple(s.start for s in revert[1:]) == geometry.pad_before
        steps = compute_steps_for_sliding_window(geometry.padded_shape, (12, 12, 8), 0.5)
        assert [tuple(s.start for s in sl) for sl in geometry.slices] == \
            [(a, b, c) for a in steps[0] for b in steps[1] for c in steps[2]]
    gaussian = compute_gaussian((12, 12, 8), 1 / 8, 10, dtype=torch.float32, device=torch.device("cpu"))
    torch.testing.assert_close(geometry.importance("cpu", torch.float32), gaussian)
    with pytest.raises(InputError, match="tile_step_size"):
        NnUNetWindow((12, 12, 8), 1.5)


@TRAINS
def test_gradient_through_nnunets_fusion_is_exact(two_folds):
    """VG through nnU-Net's windows equals autograd through the fused volume and finite differences."""
    model = load_model(two_folds, device="cpu", fold="0")
    network = model.network.double()
    x = torch.rand(1, 14, 15, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    geometry = model.window.geometry(x.shape[1:])
    assert len(geometry.slices) > 4
    labels = fused_logits(network, x[None], geometry)[0].argmax(0)
    ours = explain(model, x, "vg", classes=[1, 2], mask=labels, device="cpu")
    leaf = x[None].clone().requires_grad_(True)
    fused = fused_logits(network, leaf, geometry)[0]
    for row, c in enumerate([1, 2]):
        (grad,) = torch.autograd.grad((fused[c] * (labels == c)).sum(), leaf, retain_graph=True)
        torch.testing.assert_close(ours[row], grad[0, 0], rtol=1e-5, atol=1e-9)
    f = lambda z: float((fused_logits(network, z[None], geometry)[0][2] * (labels == 2)).sum())  # noqa: E731
    for voxel in [(3, 4, 5), (10, 2, 7)]:
        step = torch.zeros_like(x)
        step[(0, *voxel)] = 1e-5
        numeric = (f(x + step) - f(x - step)) / 2e-5
        assert numeric == pytest.approx(float(ours[1][voxel]), rel=1e-4, abs=1e-8)


def test_bad_nnunet_folders_name_the_missing_file(tmp_path):
    folder = mf.write_nnunet(tmp_path / "model")
    with pytest.raises(InputError, match=r"fold_3.*checkpoint_final.pth: missing"):
        load_model(folder, fold="3")
    with pytest.raises(InputError, match=r"checkpoint_best.pth: missing"):
        load_model(folder, checkpoint_name="checkpoint_best.pth")
    with pytest.raises(InputError, match="--fold: expected fold numbers"):
        load_model(folder, fold="first")
    (folder / "plans.json").unlink()
    with pytest.raises(InputError, match=r"plans.json: missing: an nnU-Net v2 trained-model folder needs"):
        load_model(folder)


@pytest.fixture(scope="module")
def untrained_folds(tmp_path_factory):
    """Folds 0, 1 and 'all' with random weights (loading needs no training)."""
    return mf.write_nnunet(tmp_path_factory.mktemp("nnunet_folds") / "Dataset998", folds=(0, 1, "all"))


@pytest.mark.parametrize("fold, expected", [
    (0, [0]), (1, [1]), ([0, 1], [0, 1]), ((1, 0), [1, 0]), (np.int64(1), [1]), ([np.int64(0)], [0]),
    ("0", [0]), ("0, 1", [0, 1]), ("all", ["all"]), (["all"], ["all"]), ([0, "all"], [0, "all"]),
    (None, [0, 1, "all"])])
def test_fold_is_an_int_a_sequence_of_ints_or_all_in_python_and_on_the_command_line(untrained_folds, fold, expected):
    """The Python API takes fold=0 (was: AttributeError 'int' object has no attribute 'strip')."""
    model = load_model(untrained_folds, device="cpu", fold=fold)
    assert model.network_config["folds"] == expected


@pytest.mark.parametrize("fold", [True, -1, "fold_0", [0.5], [], "", ",", [[0]], "²"])
def test_a_fold_that_is_no_fold_number_is_one_clear_error(untrained_folds, fold):
    with pytest.raises(InputError, match="--fold.*expected fold numbers or 'all'"):
        load_model(untrained_folds, device="cpu", fold=fold)


def test_fold_zero_given_to_a_bundle_is_refused_not_ignored(tmp_path):
    bundle = mf.write_bundle(tmp_path / "bundle")
    with pytest.raises(InputError, match="--fold.*nnU-Net folders only"):
        load_model(bundle, device="cpu", fold=0)
