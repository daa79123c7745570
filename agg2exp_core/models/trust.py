"""Model files are programs: what may be loaded without the user's explicit trust.

A pickle (``torch.load(weights_only=False)``) runs whatever its ``__reduce__`` says, and a
MONAI bundle config runs ``$`` expressions and instantiates any ``_target_``. Without
``--trust-model-code`` (``trust_code=True`` in the API) checkpoints are read with
``weights_only=True`` and a short allow-list of classes real checkpoints hold (numpy
scalars in nnU-Net's ``logging``), and bundle configs are checked (``sources.bundle_guard``).
A file that needs more is refused in one line naming it. TorchScript is *not* sandboxed by
this: ``torch.jit.load`` is as trusted as the user's choice of file (docs/DEPLOYMENT.md).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from agg2exp_core.errors import InputError

TRUST_FLAG = "--trust-model-code"
TRUST_HINT = f"pass {TRUST_FLAG} (trust_code=True) only if you trust its author"


def numpy_globals() -> list:
    """The numpy pieces a checkpoint holding numpy scalars or arrays unpickles (no code of the file's)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
                                          np.int8, np.uint8, np.bool_)}
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype, *sorted(dtypes, key=str)]


def refusal(path: Path | str, what: str) -> InputError:
    """The one-line refusal of a model file that would run code of its own."""
    return InputError(path, f"{what}: loading it can run code from the file; {TRUST_HINT}")


def load_tensors(path: Path, trust_code: bool = False, what: str = "checkpoint"):
    """``torch.load`` of a checkpoint: weights only (plus numpy scalars) unless ``trust_code``."""
    try:
        with torch.serialization.safe_globals(numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needed = _needed_global(err)
        if not trust_code and needed is None:
            raise  # not a pickle that asks for code: a corrupt or foreign file (the caller says so)
        if not trust_code:
            raise refusal(path, f"the {what} needs pickle (it holds {needed})") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def _needed_global(err: Exception) -> str | None:
    """The global the weights-only unpickler refused, None when it refused something else
    (random bytes give "Unsupported operand"); torch's message is many lines."""
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) (\S+)", str(err))
    return found.group(1) if found else None
