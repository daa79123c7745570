"""Builders shared by the reliability tests (this module holds no tests).

A tiny cohort of 16^3 NIfTI volumes written with nibabel, a tiny MONAI UNet checkpoint
saved with ``agg2exp_core.models.save_checkpoint``, and helpers to run the real command
line ``python -m agg2exp_core`` and to fingerprint a folder byte for byte.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models import build_network, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
LABELS = ["background", "organ_a", "organ_b"]
SMALL_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
SHAPE = (16, 16, 16)
CLI = [sys.executable, "-m", "agg2exp_core", "--threads", "1"]


def write_nifti(path: Path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def make_volume(seed: int, with_b: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(HU int16, label uint8) of one 16^3 phantom: two blobs in noisy soft tissue."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), axis=-1).astype(float)
    label = np.zeros(SHAPE, np.uint8)
    hu = rng.normal(-50, 30, SHAPE)
    for cls, value, radius in ((1, 400.0, 3.5), (2, -600.0, 3.0)):
        if cls == 2 and not with_b:
            continue
        centre = rng.uniform(4.5, 11.5, size=3)
        inside = np.linalg.norm(grid - centre, axis=-1) <= radius
        label[inside] = cls
        hu[inside] = value + rng.normal(0, 20, inside.sum())
    return np.clip(hu, -1024, 3071).astype(np.int16), label


def make_cohort(root: Path, n: int = 6, seed: int = 0, missing_b: tuple[str, ...] = ()) -> Path:
    """Write ``n`` cases and a manifest; cases named in ``missing_b`` have no class 2 in their labels."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["case_id,image,label,sex,age,dataset,split"]
    for i in range(n):
        case_id = f"c{i}"
        hu, label = make_volume(seed * 1000 + i, with_b=case_id not in missing_b)
        write_nifti(root / f"{case_id}_ct.nii.gz", hu)
        write_nifti(root / f"{case_id}_seg.nii.gz", label)
        lines.append(f"{case_id},{case_id}_ct.nii.gz,{case_id}_seg.nii.gz,{'FM'[i % 2]},{40 + i},ref,"
                     f"{'train' if i < n - 2 else 'test'}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def make_checkpoint(path: Path, never_predict: int | None = None, seed: int = 0) -> Path:
    """A tiny random UNet whose output biases are set so that classes 0 and 1 split the
    voxels of a typical phantom about evenly and class 2 takes a fair share too, unless
    ``never_predict`` names a class that must never win the argmax (an empty class)."""
    torch.manual_seed(seed)
    net = build_network(SMALL_UNET, len(LABELS)).eval()
    hu, _ = make_volume(12345)
    x = torch.from_numpy(np.clip((hu.astype(np.float32) + 1024) / 2048, 0, 1))[None, None]
    with torch.no_grad():
        logits = net(x)[0]
        bias = net.state_dict()["model.2.conv.bias"]
        for c in range(1, len(LABELS)):
            # quantile 1 - 1/(c+2): class c wins about a 1/(c+2) share against background
            shift = torch.quantile((logits[c] - logits[0]).flatten(), 1 - 1 / (c + 2))
            bias[c] -= shift
        if never_predict is not None:
            bias[never_predict] = -1e4
    return save_checkpoint(path, net, SMALL_UNET, LABELS, Preprocessing(spacing=None), roi_size=SHAPE)


def cli_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_cli(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m agg2exp_core --threads 1 ARGS`` from the repository root."""
    return subprocess.run([*CLI, *map(str, args)], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256): equal fingerprints, equal bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_phantom_cohort(root: Path):
    """Five phantom cases of the 17 thorax labels at 12 mm and a random tiny UNet checkpoint."""
    import torch

    from agg2exp_core.io.phantoms import generate_cohort
    from agg2exp_core.io.preprocessing import Preprocessing
    from agg2exp_core.labels import THORAX_LABELS
    from agg2exp_core.models import build_network, save_checkpoint

    tiny = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
    manifest = generate_cohort(root / "cohort", n_reference=2, n_test=1, n_external=2, shape=(32, 24, 24),
                               spacing=(12.0, 12.0, 12.0), seed=1)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "tiny.pt", build_network(tiny, len(THORAX_LABELS)), tiny, THORAX_LABELS,
                                 Preprocessing(spacing=None), roi_size=(32, 24, 24))
    return manifest, checkpoint
