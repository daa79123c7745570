"""TorchScript models (``torch.jit.save``) described by a sidecar JSON (labels, preprocessing, window)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from agg2exp_core.errors import InputError
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models.devices import resolve_device
from agg2exp_core.models.inference import WindowSpec
from agg2exp_core.models.segmenter import Segmenter
from agg2exp_core.models.sources.common import PREDICT_SW_BATCH, Description, fingerprint, first_line, sidecar_of


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds ``constants.pkl`` and ``code/``; ``torch.save`` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def load_torchscript(path: Path, device="auto", given: Description = Description()) -> Segmenter:
    """``torch.jit.load`` plus the sidecar (``given`` from ``--labels`` wins over the file's)."""
    described = given.over(sidecar_of(path))
    if not described.labels:
        raise InputError(path, f"TorchScript needs its labels: a sidecar {path.with_suffix('.json').name} "
                               "with \"labels\" (and preprocessing, window) or --labels FILE")
    dev = resolve_device(device)
    try:
        network = torch.jit.load(str(path), map_location=dev).eval()
    except Exception as err:  # torch raises RuntimeError and others for foreign archives
        raise InputError(path, f"cannot load TorchScript ({first_line(err)})") from None
    window = None if described.whole_volume else (described.window or WindowSpec((96, 96, 96),
                                                                                 sw_batch_size=PREDICT_SW_BATCH))
    files = [path] + ([described.source] if described.source else [])
    return Segmenter(network=network, network_config={"name": "torchscript", "file": path.name},
                     label_names=list(described.labels), preprocessing=described.preprocessing or Preprocessing(),
                     window=window, checkpoint_sha256=fingerprint(files), device=dev, source="torchscript")
