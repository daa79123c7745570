"""Every model source behind one ``load_model``: framework oracles, one-line errors, and
every method (VG, SmoothGrad, IG, KernelSHAP, evaluation) on every source.

Models are written locally (tests/support/model_folders.py): our checkpoint, a MONAI bundle, an
nnU-Net v2 folder (trained for seconds), TorchScript with a sidecar and plain state dicts.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'support'))
import model_folders as mf  # noqa: E402

from agg2exp_core.analysis.evaluation import CurveConfig, EvaluationConfig, FaithfulnessConfig, SensitivityConfig, \
    evaluate_case  # noqa: E402
from agg2exp_core.attribution import explain  # noqa: E402
from agg2exp_core.attribution.kernelshap import build_game, kernelshap_run  # noqa: E402
from agg2exp_core.cli import main  # noqa: E402
from agg2exp_core.errors import InputError  # noqa: E402
from agg2exp_core.io.images import load_case, load_nifti  # noqa: E402
from agg2exp_core.io.preprocessing import Intensity, Preprocessing  # noqa: E402
from agg2exp_core.models import build_network, save_checkpoint  # noqa: E402
from agg2exp_core.models.inference import WindowSpec  # noqa: E402
from agg2exp_core.models.sources import load_model  # noqa: E402
from agg2exp_core.pipeline.artifacts import slice_artifact  # noqa: E402

torch.set_num_threads(1)
SOURCES = ("agg2exp", "bundle", "nnunet", "torchscript", "state_dict")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    scans = [mf.write_scan(root / "scans", seed) for seed in range(2)]
    save_checkpoint(root / "ours.pt", mf.tiny_unet(), mf.TINY_UNET, mf.LABELS, Preprocessing(spacing=(3.0, 3.0, 3.0)),
                    roi_size=(10, 10, 8))
    mf.write_bundle(root / "bundle")
    mf.write_torchscript(root / "ts")
    torch.save(mf.tiny_unet(seed=1).state_dict(), root / "weights.pt")
    (root / "labels.txt").write_text("background\norgan\nbone\n")
    if importlib.util.find_spec("nnunetv2"):  # pinned; without it only the nnU-Net cases skip
        mf.write_nnunet(root / "nnunet", train_on=scans, steps=40)
    return root


def model_of(folder: Path, source: str):
    if source == "nnunet" and not (folder / "nnunet").exists():
        pytest.skip("nnunetv2 is not installed")
    paths = {"agg2exp": folder / "ours.pt", "bundle": folder / "bundle", "nnunet": folder / "nnunet",
             "torchscript": folder / "ts" / "model.ts", "state_dict": folder / "weights.pt"}
    extra = {"network": "unet", "network_params": mf.TINY_UNET["params"], "labels": folder / "labels.txt"} \
        if source == "state_dict" else {}
    return load_model(paths[source], device="cpu", **extra)


def case_of(folder: Path, model, seed: int = 0):
    image, seg = folder / "scans" / f"ct{seed}.nii.gz", folder / "scans" / f"ct{seed}_label.nii.gz"
    return load_case({"case_id": f"c{seed}", "image": str(image), "label": str(seg)}, model.preprocessing,
                     n_labels=model.n_classes)


# ----------------------------------------------------------------------------- recognition and oracles
@pytest.mark.parametrize("source", SOURCES)
def test_each_source_is_recognised_and_yields_the_same_interface(folder, source):
    model = model_of(folder, source)
    assert model.source == source and model.label_names == mf.LABELS
    case = case_of(folder, model)
    assert case.image.dim() == 4 and case.label.shape == case.image.shape[1:]
    assert model.predict(case.image).shape == (3, *case.image.shape[1:])
    provenance = model.provenance()
    assert provenance["source"] == source and provenance["preprocessing"]["kind"] in ("monai", "bundle", "nnunet")
    assert provenance["air_value"] == pytest.approx(model.air_value()) and len(provenance["sha256"]) == 64
    json.dumps(provenance)  # stored in runs.params


def test_bundle_equals_its_own_preprocessing_and_inferer(folder):
    from monai.bundle import ConfigParser

    model = model_of(folder, "bundle")
    bundle, image = folder / "bundle", folder / "scans" / "ct0.nii.gz"
    parser = ConfigParser()
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    theirs = parser.get_parsed_content("preprocessing")({"image": str(image)})["image"]
    ours, grid = model.preprocessing.image(*load_nifti(image))
    torch.testing.assert_close(ours, theirs.as_tensor(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(grid, np.asarray(theirs.affine), atol=1e-6)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt"))
    with torch.no_grad():
        expected = parser.get_parsed_content("inferer")(theirs.as_tensor()[None], network.eval())[0]
    torch.testing.assert_close(model.predict(ours), expected, atol=1e-4, rtol=0)
    assert model.window.overlap == 0.5 and model.window.roi_size == (12, 12, 12)
    assert model.preprocessing.intensity == Intensity("window", -200.0, 800.0)


def test_bundle_labels_land_on_the_image_grid_as_its_transforms_would_put_them(folder):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    model = model_of(folder, "bundle")
    case = case_of(folder, model)
    moved = Compose([LoadImaged("label"), EnsureChannelFirstd("label"), Orientationd("label", "RAS"),
                     Spacingd("label", (2.5, 2.5, 2.5), mode="nearest")])(
        {"label": str(folder / "scans" / "ct0_label.nii.gz")})["label"][0]
    assert case.label.shape == moved.shape
    # nearest neighbours differ only where a sample falls half-way between voxels (2 mm -> 2.5 mm)
    assert (case.label.numpy() == moved.numpy()).mean() > 0.98
    label, affine = load_nifti(folder / "scans" / "ct0_label.nii.gz")
    for c in (1, 2):  # each class stays where it is in the world (centroids within a voxel)
        before = affine[:3, :3] @ np.argwhere(label == c).mean(0) + affine[:3, 3]
        after = case.affine[:3, :3] @ np.argwhere(case.label.numpy() == c).mean(0) + case.affine[:3, 3]
        assert np.linalg.norm(before - after) < 1.5


def test_torchscript_equals_the_eager_network_through_monais_window(folder):
    from monai.inferers import sliding_window_inference

    model = model_of(folder, "torchscript")
    eager = mf.tiny_unet()
    x = torch.rand(1, 21, 17, 13, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = sliding_window_inference(x[None], (10, 10, 8), 2, eager, overlap=0.25, mode="gaussian")[0]
    torch.testing.assert_close(model.predict(x), expected, atol=1e-4, rtol=0)
    # the sidecar's preprocessing: LPS orientation at 3 mm
    case = case_of(folder, model)
    assert np.allclose(np.sign(np.diag(case.affine)[:3]), [-1, -1, 1]) and np.allclose(case.spacing, 3.0)
    vg_jit = explain(model, x, "vg", classes=[1], device="cpu")
    vg_eager = explain(eager, x, "vg", classes=[1], window=model.window, device="cpu")
    torch.testing.assert_close(vg_jit, vg_eager, atol=1e-5, rtol=1e-4)


STATE_DICT_NETWORKS = [
    ("unet", mf.TINY_UNET["params"], 16),
    ("basicunet", {"features": [4, 4, 8, 8, 16, 4]}, 32),
    ("segresnet", {"init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1]}, 16),
    ("dynunet", {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
                 "filters": [4, 8, 8]}, 16),
    ("unetr", {"img_size": [16, 16, 16], "feature_size": 4, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2}, 16),
    ("swinunetr", {"feature_size": 12, "depths": [1, 1, 1, 1], "norm_name": "batch"}, 32),
]


@pytest.mark.parametrize("name,params,size", STATE_DICT_NETWORKS, ids=[n[0] for n in STATE_DICT_NETWORKS])
def test_plain_state_dicts_of_the_monai_networks(tmp_path, name, params, size):
    torch.manual_seed(0)
    network = build_network({"name": name, "params": params}, 3).eval()
    torch.save({"state_dict": network.state_dict()}, tmp_path / "w.pt")  # wrapped, as Lightning saves
    (tmp_path / "labels.json").write_text(json.dumps({"0": "background", "1": "organ", "2": "bone"}))
    model = load_model(tmp_path / "w.pt", device="cpu", network=name, network_params=params,
                       labels=tmp_path / "labels.json")
    assert model.source == "state_dict" and model.label_names == mf.LABELS
    x = torch.rand(1, 1, size, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.network(x), network(x))


def test_a_sidecar_next_to_a_state_dict_describes_it(tmp_path):
    torch.save(mf.tiny_unet().state_dict(), tmp_path / "w.pt")
    (tmp_path / "w.json").write_text(json.dumps({**mf.SIDECAR, "network": mf.TINY_UNET}))
    model = load_model(tmp_path / "w.pt", device="cpu")
    assert model.window == WindowSpec((10, 10, 8), 0.25, sw_batch_size=2)
    assert model.preprocessing.orientation == "LPS" and model.label_names == mf.LABELS


# ----------------------------------------------------------------------------- bad input
def test_bad_models_are_one_line_errors_naming_the_file(folder, tmp_path):
    cases = []
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", {}, "empty: not a model folder"))
    bundle = tmp_path / "bundle"
    mf.write_bundle(bundle)
    (bundle / "configs" / "metadata.json").unlink()
    cases.append((bundle, {}, "metadata.json: missing: a MONAI bundle needs"))
    broken = mf.write_bundle(tmp_path / "broken")
    torch.save(build_network({"name": "unet", "params": {"channels": [8, 16], "strides": [2]}}, 3).state_dict(),
               broken / "models" / "model.pt")
    cases.append((broken, {}, "model.pt: weights do not match the bundle's network_def"))
    cases.append((folder / "bundle", {"fold": "0"}, "--fold: applies to nnU-Net folders only, not to a MONAI bundle"))
    cases.append((folder / "weights.pt", {}, "weights.pt: plain state dict: give --network NAME and --labels FILE"))
    cases.append((folder / "weights.pt", {"network": "vnet", "labels": folder / "labels.txt"}, "unknown network 'vnet'"))
    (tmp_path / "two.txt").write_text("background\norgan\n")
    cases.append((folder / "weights.pt", {"network": "unet", "network_params": mf.TINY_UNET["params"],
                                          "labels": tmp_path / "two.txt"}, "weights do not match network config"))
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "model.ts").write_bytes((folder / "ts" / "model.ts").read_bytes())
    cases.append((tmp_path / "ts" / "model.ts", {}, "model.ts: TorchScript needs its labels"))
    cases.append((tmp_path / "missing.pt", {}, "missing.pt: checkpoint file not found"))
    for path, options, message in cases:
        with pytest.raises(InputError) as err:
            load_model(path, device="cpu", **options)
        assert message in str(err.value) and "\n" not in str(err.value), (path, str(err.value))


def test_cli_names_the_model_file_in_one_line(folder, tmp_path, capsys):
    manifest = mf.write_manifest(tmp_path / "cohort", n=1)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "plans.json").write_text("{}")
    rc = main(["predict", "--manifest", str(manifest), "--model", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "dataset.json: missing" in err
    rc = main(["precompute", "--manifest", str(manifest), "--model", str(folder / "bundle"), "--db",
               str(tmp_path / "s.duckdb"), "--network-params", "{}"])
    err = capsys.readouterr().err
    assert rc == 2 and "--network-params" in err and not (tmp_path / "s.duckdb").exists()


# ----------------------------------------------------------------------------- preprocessing belongs to the model
def test_air_value_and_hu_in_each_intensity_space():
    assert Preprocessing().air_value() == 0.0
    assert Intensity("window", -200, 800).air() == 0.0  # clipped
    assert Intensity("window", -1024, 1024, b_min=-1, b_max=1).air() == -1.0
    assert Intensity("ct", -150, 780, mean=120, std=210).air() == pytest.approx((-150 - 120) / 210)
    assert Intensity("zscore", mean=-300, std=400).air() == pytest.approx((-1024 + 300) / 400)
    assert Intensity("none").air() == -1024.0
    for intensity in (Intensity("window", -200, 800), Intensity("ct", -150, 780, 120, 210), Intensity("zscore", 0, 0, 5, 2)):
        hu = torch.tensor([-100.0, 0.0, 300.0])
        np.testing.assert_allclose(intensity.to_hu(intensity.apply(hu)), hu.numpy(), atol=1e-3)
    with pytest.raises(InputError, match="give a baseline"):
        Intensity("image").air()


def test_the_default_baseline_is_the_models_air(folder):
    model = model_of(folder, "nnunet")
    case = case_of(folder, model)
    air = model.air_value()
    assert air == pytest.approx((-150 - 120) / 210)
    small = {"classes": [1], "device": "cpu"}
    default = explain(model, case.image, "ig", steps=2, **small)
    torch.testing.assert_close(default, explain(model, case.image, "ig", steps=2, baseline=air, **small))
    assert not torch.allclose(default, explain(model, case.image, "ig", steps=2, baseline=0.0, **small))
    game = build_game(model, case.image, [1], partition="cubes", n_per_axis=2)
    assert torch.allclose(game.engine.base, torch.full_like(game.engine.base, air))


def test_artefacts_are_in_ras_order_and_in_hu(folder):
    model = model_of(folder, "torchscript")  # LPS grid
    case = case_of(folder, model)
    pred = model.predict(case.image).argmax(0).numpy()
    attributions = np.stack([np.indices(pred.shape)[0]] * 2).astype(np.float32)  # x index of the LPS grid
    arrays = slice_artifact(case, pred, attributions, [1, 2], model.preprocessing)
    hu = model.preprocessing.to_hu(case.image)
    np.testing.assert_array_equal(arrays["ct"], np.round(hu[::-1, ::-1, :]).astype(np.int16))
    np.testing.assert_array_equal(arrays["pred"], pred[::-1, ::-1, :])
    assert arrays["attr_1_y"][0, 0] == pred.shape[0] - 1  # RAS x = 0 is the LPS grid's last column
    np.testing.assert_array_equal(arrays["ct_window"], [-1024.0, 1024.0])
    nnunet = model_of(folder, "nnunet")  # nnU-Net's (z, y, x) grid comes out as RAS (x, y, z)
    case = case_of(folder, nnunet)
    pred = nnunet.predict(case.image).argmax(0).numpy()
    arrays = slice_artifact(case, pred, np.zeros((1, *pred.shape)), [1], nnunet.preprocessing)
    assert arrays["ct"].shape == pred.shape[::-1] and arrays["spacing"][2] == pytest.approx(case.spacing[0])
    np.testing.assert_array_equal(arrays["ct_window"], [-150.0, 780.0])


# ----------------------------------------------------------------------------- every method on every source
@pytest.mark.parametrize("method", ["vg", "smoothgrad", "ig", "kernelshap"])
@pytest.mark.parametrize("source", SOURCES)
def test_every_method_runs_on_every_source(folder, source, method):
    model = model_of(folder, source)
    case = case_of(folder, model)
    pred = model.predict(case.image).argmax(0)
    params = {"vg": {}, "smoothgrad": {"n_samples": 2}, "ig": {"steps": 2},
              "kernelshap": {"partition": "cubes", "n_per_axis": 2, "n_coalitions": 24, "spacing": case.spacing}}[method]
    attributions = explain(model, case.image, method, classes=[0, 1, 2], mask=pred, device="cpu", **params)
    assert attributions.shape == (3, *case.image.shape[1:]) and torch.isfinite(attributions).all()
    for row in range(3):
        assert bool((attributions[row] != 0).any()) == bool((pred == row).any())
    if method == "kernelshap":
        result = kernelshap_run(model, case.image, [1], mask=pred, **params)
        np.testing.assert_allclose(result.values.sum(1), result.v_full - result.v_empty, rtol=1e-6)
        if model.window is not None:
            assert result.stats.patch_hits > 0  # the patch cache works on this window's geometry


@pytest.mark.parametrize("source", SOURCES)
def test_evaluation_runs_on_every_source(folder, source):
    model = model_of(folder, source)
    case = case_of(folder, model)
    config = EvaluationConfig(faithfulness=FaithfulnessConfig(n_subsets=6, subset_size=8),
                              sensitivity=SensitivityConfig(n=1), curves=CurveConfig(partition="cubes", steps=2,
                                                                                      game={"n_per_axis": 2}))
    metrics, curves = evaluate_case(model, case.image, {"vg": {}}, [1], config)
    assert {"faithfulness", "complexity", "efficiency_s", "sensitivity_avg"} <= set(metrics.metric)
    assert np.isfinite(metrics.value.to_numpy(float)).all() and len(curves) == 2 * 3


# ----------------------------------------------------------------------------- the CLI end to end
def test_cli_precompute_with_an_nnunet_folder_records_its_provenance(folder, tmp_path, capsys):
    manifest = mf.write_manifest(tmp_path / "cohort", n=2)
    db = tmp_path / "store.duckdb"
    assert main(["precompute", "--manifest", str(manifest), "--model", str(folder / "nnunet"), "--fold", "0",
                 "--db", str(db), "--method", "vg", "--classes", "1,2"]) == 0
    assert "2 computed" in capsys.readouterr().out
    with duckdb.connect(str(db), read_only=True) as con:
        params = json.loads(con.execute("SELECT params FROM runs").fetchone()[0])
        n_rows = con.execute("SELECT count(*) FROM local_importance").fetchone()[0]
    assert params["model"]["source"] == "nnunet" and params["model"]["preprocessing"]["normalization"] == "CTNormalization"
    assert params["model"]["window"]["kind"] == "NnUNetWindow" and params["model"]["network"]["folds"] == [0]
    assert n_rows == 2 * 2 * 3  # cases x explained classes x class RoIs
    assert main(["predict", "--manifest", str(manifest), "--model", str(folder / "bundle")]) == 0
    assert "mean over 2 cases" in capsys.readouterr().out


@pytest.mark.parametrize("source", SOURCES)
def test_cli_predict_takes_every_source_as_the_readme_shows(folder, tmp_path, capsys, source):
    manifest = mf.write_manifest(tmp_path / "cohort", n=1)
    argv = {"agg2exp": ["--model", str(folder / "ours.pt")],
            "bundle": ["--model", str(folder / "bundle")],
            "nnunet": ["--model", str(folder / "nnunet"), "--fold", "0", "--checkpoint-name", "checkpoint_final.pth"],
            "torchscript": ["--model", str(folder / "ts" / "model.ts")],
            "state_dict": ["--checkpoint", str(folder / "weights.pt"), "--network", "unet", "--network-params",
                           json.dumps(mf.TINY_UNET["params"]), "--labels", str(folder / "labels.txt")]}[source]
    assert main(["predict", "--manifest", str(manifest), "--device", "cpu", *argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith("c0\tmean foreground Dice ") and "mean over 1 cases" in out


def test_orientation_as_stored_and_old_preprocessing_descriptions(folder):
    image = folder / "scans" / "ct0.nii.gz"
    volume, affine = load_nifti(image)
    kept, grid = Preprocessing(spacing=None, orientation=None).image(volume, affine)
    np.testing.assert_array_equal(grid, affine)  # the voxels as stored (LPS here)
    ras, grid = Preprocessing(spacing=None).image(volume, affine)
    torch.testing.assert_close(ras[0], kept[0].flip(0, 1))
    assert np.all(np.diag(grid)[:3] > 0)
    old = Preprocessing.from_dict({"spacing": None, "hu_window": [-1000, 400]})  # checkpoints before orientation
    assert old.orientation == "RAS" and old.normalization == "window" and old.intensity.lo == -1000


def test_window_settings_of_a_call_go_over_the_models_own(folder):
    model = model_of(folder, "nnunet")
    case = case_of(folder, model)
    with pytest.raises(InputError, match="overlap: not a setting of NnUNetWindow"):
        explain(model, case.image, "vg", classes=[1], overlap=0.5, device="cpu")
    dense = model.window.replace(tile_step_size=0.25).geometry(case.image.shape[1:])
    assert len(dense.slices) > len(model.window.geometry(case.image.shape[1:]).slices)
    coarse = explain(model, case.image, "vg", classes=[1], device="cpu")
    finer = explain(model, case.image, "vg", classes=[1], tile_step_size=0.25, device="cpu")
    assert not torch.allclose(coarse, finer)  # the call's tile step took effect


def test_a_yaml_bundle_with_a_simple_inferer_runs_on_whole_volumes(tmp_path):
    yaml = pytest.importorskip("yaml")
    bundle = mf.write_bundle(tmp_path / "yaml_bundle")
    (bundle / "configs" / "inference.json").unlink()
    config = {**mf.BUNDLE_CONFIG, "inferer": {"_target_": "SimpleInferer"}}
    (bundle / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    model = load_model(bundle, device="cpu")
    assert model.window is None and model.provenance()["window"] is None
    x = torch.rand(1, 16, 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), mf.tiny_unet()(x[None])[0])
    assert explain(model, x, "vg", classes=[1], device="cpu").shape == (1, 16, 12, 8)
