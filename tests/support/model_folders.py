"""Small model folders of every supported kind, written locally (nothing is downloaded).

A CT-like scan with a body, an organ and bone (HU), stored LPS-oriented at anisotropic
spacing so that orientation and resampling matter, and networks with random weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

LABELS = ["background", "organ", "bone"]
SCAN_SHAPE = (22, 19, 12)
SCAN_AFFINE = np.array([[-2.0, 0, 0, 30.0], [0, -2.0, 0, 25.0], [0, 0, 3.0, -10.0], [0, 0, 0, 1]])
TINY_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


def ct_scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume, label map) on SCAN_SHAPE: air, a body ellipsoid, an organ and a bone rod."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SCAN_SHAPE], indexing="ij")
    body = x ** 2 / 0.8 + y ** 2 / 0.7 + z ** 2 / 1.5 < 1
    organ = (x - 0.25) ** 2 + (y + 0.1) ** 2 + z ** 2 / 2 < 0.12
    bone = (x + 0.35) ** 2 + (y - 0.2) ** 2 < 0.03
    hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, SCAN_SHAPE)
    hu[organ] += 60
    hu[bone & body] = 700 + rng.normal(0, 30, int((bone & body).sum()))
    label = np.zeros(SCAN_SHAPE, np.int16)
    label[organ] = 1
    label[bone & body] = 2
    return hu.astype(np.float32), label


def write_scan(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    hu, label = ct_scan(seed)
    image, seg = folder / f"ct{seed}.nii.gz", folder / f"ct{seed}_label.nii.gz"
    nib.save(nib.Nifti1Image(hu, SCAN_AFFINE), str(image))
    nib.save(nib.Nifti1Image(label, SCAN_AFFINE), str(seg))
    return image, seg


def write_manifest(folder: Path, n: int = 2) -> Path:
    rows = ["case_id,image,label,split"]
    for i in range(n):
        image, seg = write_scan(folder, i)
        rows.append(f"c{i},{image.name},{seg.name},test")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def tiny_unet(n_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    from agg2exp_core.models import build_network

    torch.manual_seed(seed)
    return build_network(TINY_UNET, n_classes).eval()


# ----------------------------------------------------------------------------- MONAI bundle
BUNDLE_CONFIG = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                    "channels": [4, 8], "strides": [2], "num_res_units": 0},
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [2.5, 2.5, 2.5], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -200, "a_max": 800, "b_min": 0.0,
         "b_max": 1.0, "clip": True},
        {"_target_": "EnsureTyped", "keys": "image"}]},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [12, 12, 12], "sw_batch_size": 2, "overlap": 0.5},
}
BUNDLE_META = {"version": "0.1.0", "network_data_format": {
    "inputs": {"image": {"type": "image", "num_channels": 1}},
    "outputs": {"pred": {"type": "image", "num_channels": 3,
                         "channel_def": {"0": "background", "1": "organ", "2": "bone"}}}}}


def write_bundle(folder: Path, seed: int = 0) -> Path:
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "inference.json").write_text(json.dumps(BUNDLE_CONFIG, indent=1))
    (folder / "configs" / "metadata.json").write_text(json.dumps(BUNDLE_META, indent=1))
    torch.save(tiny_unet(3, seed).state_dict(), folder / "models" / "model.pt")
    return folder


# ----------------------------------------------------------------------------- TorchScript
SIDECAR = {"labels": LABELS, "preprocessing": {"spacing": [3.0, 3.0, 3.0], "orientation": "LPS",
                                               "normalization": "window", "hu_window": [-1024, 1024]},
           "window": {"roi_size": [10, 10, 8], "overlap": 0.25, "sw_batch_size": 2}}


def write_torchscript(folder: Path, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    folder.mkdir(parents=True, exist_ok=True)
    net = tiny_unet(3, seed)
    path = folder / "model.ts"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 10, 10, 8)), str(path))
    (folder / "model.json").write_text(json.dumps(SIDECAR))
    return path, net


# ----------------------------------------------------------------------------- nnU-Net v2
NNUNET_PATCH = [12, 12, 8]
NNUNET_SPACING = [3.0, 2.5, 2.5]          # (z, y, x) after transpose_forward
NNUNET_ARCH = {
    "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True}}


def nnunet_plans(transpose=(0, 1, 2)) -> dict:
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": NNUNET_PATCH, "median_image_size_in_voxels": [12, 16, 18],
        "spacing": NNUNET_SPACING, "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": NNUNET_ARCH,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": True}
    return {"dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": NNUNET_SPACING,
            "original_median_shape_after_transp": [12, 19, 22], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": list(transpose), "transpose_backward": [int(i) for i in np.argsort(transpose)],
            "configurations": {"3d_fullres": configuration}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {
                "max": 900.0, "mean": 120.0, "median": 60.0, "min": -300.0, "percentile_00_5": -150.0,
                "percentile_99_5": 780.0, "std": 210.0}}}


def write_nnunet(folder: Path, folds=(0,), seed: int = 0, transpose=(0, 1, 2), mirror_axes=(0, 1, 2),
                 train_on: list[tuple[Path, Path]] | None = None, steps: int = 60) -> Path:
    """A trained-model folder: random weights, or trained for ``steps`` (seconds) on scans."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder.mkdir(parents=True, exist_ok=True)
    plans = nnunet_plans(transpose)
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "bone": 2},
               "numTraining": 4, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    manager = PlansManager(plans)
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + i)
        network = nnUNetTrainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, 3,
                                                           enable_deep_supervision=True)
        if train_on:
            _train(network, manager, dataset, train_on, steps, seed + i)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": "3d_fullres", "fold": fold},
                    "inference_allowed_mirroring_axes": list(mirror_axes)},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def _train(network, manager, dataset: dict, scans, steps: int, seed: int) -> None:
    """A few Adam steps on random patches of the scans, preprocessed by nnU-Net itself."""
    configuration = manager.get_configuration("3d_fullres")
    preprocessor = configuration.preprocessor_class(verbose=False)
    cases = [preprocessor.run_case([str(image)], str(seg), manager, configuration, dataset)[:2] for image, seg in scans]
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    weights = torch.tensor([0.2, 1.0, 1.0])
    network.train()
    for _ in range(steps):
        data, seg = cases[rng.integers(len(cases))]
        start = [rng.integers(0, max(s - p, 0) + 1) for s, p in zip(data.shape[1:], NNUNET_PATCH)]
        box = tuple(slice(a, a + p) for a, p in zip(start, NNUNET_PATCH))
        x = torch.from_numpy(np.ascontiguousarray(data[(slice(None), *box)]))[None]
        y = torch.from_numpy(np.ascontiguousarray(seg[(0, *box)])).long().clamp_min(0)[None]
        loss = torch.nn.functional.cross_entropy(network(x)[0], y, weight=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()


# ----------------------------------------------------------------------------- hostile model files
class MarkerPayload:
    """A pickle that, when loaded, writes ``path`` (what a hostile checkpoint does first)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.system, (f"touch '{self.path}'",)


def poison_nnunet_checkpoint(folder: Path, marker: Path, fold: int = 0) -> Path:
    """checkpoint_final.pth of ``folder`` with a ``__reduce__`` payload beside its weights."""
    path = folder / f"fold_{fold}" / "checkpoint_final.pth"
    blob = torch.load(path, weights_only=True)
    torch.save({**blob, "payload": MarkerPayload(marker)}, path)
    return path


def nnunet_checkpoint_like_a_trained_one(folder: Path, fold: int = 0) -> Path:
    """What nnU-Net's trainer adds to a checkpoint: numpy scalars in logging, a torch.device, the plans."""
    path = folder / f"fold_{fold}" / "checkpoint_final.pth"
    blob = torch.load(path, weights_only=True)
    blob["init_args"] = {**blob["init_args"], "plans": json.loads((folder / "plans.json").read_text()),
                         "dataset_json": json.loads((folder / "dataset.json").read_text()),
                         "device": torch.device("cpu")}
    blob.update({"current_epoch": 1000, "_best_ema": np.float64(0.83), "grad_scaler_state": None,
                 "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.8)], "ema_fg_dice": [np.float32(0.7)],
                             "epoch_end_timestamps": [1.0, 2.0], "dice_per_class_or_region": [[np.float64(0.9)]]},
                 "inference_allowed_mirroring_axes": (0, 1, 2)})
    torch.save(blob, path)
    return path


def poison_bundle(folder: Path, marker: Path, how: str) -> Path:
    """A bundle whose inference.json runs code: ``expression`` ($ in network_def), ``target``
    (a _target_ that is a shell), ``reference`` (network_def references an item that is one)."""
    config = json.loads(json.dumps(BUNDLE_CONFIG))
    if how == "expression":
        config["network_def"]["channels"] = f"$__import__('pathlib').Path('{marker}').touch() or [4, 8]"
    elif how == "target":
        config["preprocessing"]["transforms"].insert(0, {"_target_": "subprocess.call",
                                                         "args": ["touch", str(marker)]})
    elif how == "reference":
        config["shell"] = {"_target_": "os.system", "command": f"touch '{marker}'"}
        config["network_def"]["_requires_"] = "@shell"
    else:
        raise ValueError(how)
    path = folder / "configs" / "inference.json"
    path.write_text(json.dumps(config, indent=1))
    return path
