"""Where a run's per-case files go (slice artefacts, optional NIfTI attributions) and their writing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from agg2exp_core.io.images import save_nifti
from agg2exp_core.io.manifest import file_safe_name
from agg2exp_core.store.artifacts import write_artifact


@dataclass(frozen=True)
class CaseFiles:
    """Where a run's files go: slice artefacts under ``data_dir``, optional NIfTI volumes."""

    data_dir: Path
    run_id: str
    label_names: tuple[str, ...]
    nifti_dir: Path | None = None

    def artifact(self, case_id: str) -> Path:
        return self.data_dir / "artifacts" / self.run_id / f"{case_id}.npz"


def save_case_files(files: CaseFiles, result, classes: Sequence[int]):
    """Write a ``precompute.CaseResult``'s artefact (and NIfTIs) and drop the arrays; a failure comes back as ``failure``."""
    if result.failure or result.artifact is None:
        return result
    try:
        path = files.artifact(result.case_id)
        write_artifact(result.artifact, path)
        if files.nifti_dir is not None:
            for volume, c in zip(result.attributions, classes):
                save_nifti(volume.astype(np.float32), result.affine,
                           files.nifti_dir / files.run_id / f"{result.case_id}_{file_safe_name(files.label_names[c])}.nii.gz")
    except Exception as err:  # noqa: BLE001
        result.failure = ("store", str(err))
        return result
    result.artifact, result.attributions, result.artifact_path = None, None, path
    return result
