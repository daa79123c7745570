"""Training of a segmentation network on the reference cohort's train split (MONAI).

DiceCE loss, AdamW, cosine learning-rate schedule, random crops and mild intensity
augmentation. No flips: left and right are different classes here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.transforms import Compose, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd, RandSpatialCropd
from monai.utils import set_determinism
from tqdm.auto import tqdm

from agg2exp_core.io.images import load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.errors import InputError
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.models.checkpoint import save_checkpoint
from agg2exp_core.models.devices import resolve_device
from agg2exp_core.models.networks import build_network
from agg2exp_core.models.segmenter import dice_per_class
from agg2exp_core.models.sources import load_model


@dataclass
class TrainConfig:
    network: dict = field(default_factory=lambda: {"name": "unet", "params": {}})
    label_names: tuple[str, ...] = THORAX_LABELS
    preprocessing: Preprocessing = Preprocessing(spacing=None)
    crop_size: tuple[int, int, int] = (48, 48, 48)
    roi_size: tuple[int, int, int] = (64, 48, 48)   # sliding-window size used at inference
    iterations: int = 800
    batch_size: int = 2
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    dataset: str | None = "reference"
    split: str = "train"
    seed: int = 0


def training_cases(manifest: Path, config: TrainConfig, cohort_root: str | Path | None = None,
                   allow_outside_root: bool = False) -> list[dict]:
    frame = read_manifest(manifest, cohort_root, allow_outside_root)
    rows = frame[frame.split == config.split]
    if config.dataset:
        rows = rows[rows.dataset == config.dataset]
    rows = rows[rows.label != ""]
    if rows.empty:
        raise InputError(manifest, f"no labelled cases with split '{config.split}'"
                                   + (f" in dataset '{config.dataset}'" if config.dataset else ""))
    items = []
    for _, row in rows.iterrows():
        case = load_case(row.to_dict(), config.preprocessing, n_labels=len(config.label_names))
        items.append({"image": case.image, "label": case.label[None].float()})
    return items


def augmentations(crop_size) -> Compose:
    return Compose([
        RandSpatialCropd(keys=["image", "label"], roi_size=crop_size, random_size=False),
        RandScaleIntensityd(keys="image", factors=0.05, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.02, prob=0.5),
        RandGaussianNoised(keys="image", std=0.01, prob=0.3),
    ])


def train(manifest: str | Path, out_checkpoint: str | Path, config: TrainConfig = TrainConfig(),
          device: str = "auto", progress: bool = True, cohort_root: str | Path | None = None,
          allow_outside_root: bool = False) -> Path:
    """Train on the manifest's reference train split and write a self-describing checkpoint
    (``cohort_root``, ``allow_outside_root``: see ``read_manifest``)."""
    set_determinism(seed=config.seed)
    dev = resolve_device(device)
    items = training_cases(Path(manifest), config, cohort_root, allow_outside_root)
    loader = DataLoader(Dataset(items, augmentations(config.crop_size)), batch_size=config.batch_size,
                        shuffle=True, num_workers=0, drop_last=len(items) >= config.batch_size)
    network = build_network(config.network, len(config.label_names)).to(dev)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations)
    started = time.time()
    bar = tqdm(total=config.iterations, desc="train", disable=not progress)
    step = 0
    network.train()
    while step < config.iterations:
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(batch["image"].to(dev)), batch["label"].to(dev))
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= config.iterations:
                break
    bar.close()
    extra = {"iterations": config.iterations, "seconds": round(time.time() - started, 1),
             "seed": config.seed, "crop_size": list(config.crop_size), "n_train_cases": len(items)}
    return save_checkpoint(out_checkpoint, network.eval(), config.network, config.label_names,
                           config.preprocessing, config.roi_size, extra=extra)


def evaluate_dice(manifest: str | Path, model, split: str | None = None,
                  dataset: str | None = None, device: str = "auto", cohort_root: str | Path | None = None,
                  allow_outside_root: bool = False) -> dict[str, np.ndarray]:
    """Per-case Dice ``{case_id: [l]}`` of a model (any source, see ``load_model``) on the
    manifest's labelled cases, on the model's grid. ``split`` None: the test split when the
    manifest assigns splits, else every labelled case. No case to score is an ``InputError``."""
    rows = labelled_cases(manifest, split, dataset, cohort_root, allow_outside_root)
    model = load_model(model, device=device)
    scores = {}
    for _, row in rows.iterrows():
        case = load_case(row.to_dict(), model.preprocessing, n_labels=model.n_classes)
        pred = model.predict(case.image).argmax(0)
        scores[case.case_id] = dice_per_class(pred, case.label, model.n_classes)
    return scores


def labelled_cases(manifest: str | Path, split: str | None = None, dataset: str | None = None,
                   cohort_root: str | Path | None = None, allow_outside_root: bool = False):
    """The manifest rows with a label in ``split`` (see ``evaluate_dice``) and ``dataset``."""
    frame = read_manifest(manifest, cohort_root, allow_outside_root)
    splits = sorted(set(frame.split) - {""})
    if split is None:
        split = "test" if splits else ""
    rows = frame[frame.label != ""]
    if split:
        rows = rows[rows.split == split]
    if dataset:
        rows = rows[rows.dataset == dataset]
    if rows.empty:
        where = " and ".join(w for w in (f"split '{split}'" if split else "", f"dataset '{dataset}'" if dataset
                                         else "") if w) or "the manifest"
        present = f"splits present: {', '.join(splits)}" if splits else "no split column"
        raise InputError(manifest, f"no labelled case (a 'label' path) in {where} ({present}; "
                                   f"{len(frame)} cases, {int((frame.label != '').sum())} labelled)")
    return rows


