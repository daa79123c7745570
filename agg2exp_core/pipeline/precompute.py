"""Per-case pipeline: load -> predict -> Dice -> explain -> aggregate -> slices -> store.

One transaction per case, so an interrupted run leaves only whole cases behind and a
rerun of the same configuration skips them. A failing case is recorded in ``failures``
and the others go on.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from agg2exp_core import store
from agg2exp_core.aggregate import local_matrices, region_mean_attribution
from agg2exp_core.attribution.registry import check_params, explain, get_method
from agg2exp_core.io.images import Case, load_case, save_like
from agg2exp_core.io.manifest import check_roi_names, file_safe_name, read_manifest
from agg2exp_core.errors import InputError
from agg2exp_core.labels import roi_specs
from agg2exp_core.models import Segmenter, dice_per_class, load_checkpoint
from agg2exp_core.pipeline.artifacts import slice_artifact, write_artifact

PUBLISH_EVERY_S = 5.0


@dataclass
class PrecomputeSummary:
    run_id: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def line(self) -> str:
        mean = f", {np.mean(self.seconds):.1f} s/case" if self.seconds else ""
        return (f"run {self.run_id}: {len(self.done)} computed, {len(self.skipped)} already done, "
                f"{len(self.failed)} failed{mean}")


def case_record(row: dict, case: Case | None) -> dict:
    present = sorted(name for name, mask in (case.rois.items() if case else []) if mask.any())
    return {"case_id": row["case_id"], "dataset": row.get("dataset") or "default", "split": row.get("split") or "",
            "sex": row.get("sex"), "age": row.get("age"), "image_path": row.get("image"),
            "label_path": row.get("label") or None, "pathologies": ";".join(present)}


@dataclass
class CaseResult:
    matrices: dict[str, np.ndarray]
    dice: np.ndarray | None
    artifact: dict
    attributions: np.ndarray
    region_means: np.ndarray | None = None   # [explained classes, n_classes]: mean |attribution| per region voxel


def process_case(model: Segmenter, case: Case, method: str, params: dict,
                 classes: Sequence[int]) -> CaseResult:
    """Prediction, Dice, attributions of every class and their RoI-importance matrices."""
    pred = model.predict(case.image).argmax(0)
    dice = dice_per_class(pred, case.label, model.n_classes) if case.label is not None else None
    if method == "kernelshap":  # fcc / hybrid units are laid out in mm on the case's grid
        params = {"spacing": case.spacing, **params}
    attributions = explain(model, case.image, method, classes=list(classes), mask=pred, device=model.device,
                           **params).float().numpy()
    matrices = local_matrices(attributions, pred.numpy(), model.n_classes, case.rois)
    return CaseResult(matrices, dice, slice_artifact(case, pred.numpy(), attributions, classes), attributions,
                      region_mean_attribution(attributions, pred.numpy(), model.n_classes))


def precompute(manifest: str | Path, model: str | Path | Segmenter, db: str | Path, method: str = "vg",
               params: dict | None = None, classes: Sequence[int] | None = None, device: str = "auto",
               data_dir: str | Path | None = None, nifti_dir: str | Path | None = None,
               progress: bool = True, case_ids: Sequence[str] | None = None) -> PrecomputeSummary:
    """Explain every case of a manifest with one method; resumable; returns a summary.

    ``model``: a loaded ``Segmenter`` or the path of a checkpoint. All bad input (method,
    parameters, classes, case ids, manifest) is an ``InputError`` before anything is written.
    """
    method = get_method(method).name
    params = dict(params or {})
    check_params(method, params)
    frame = _select_cases(read_manifest(manifest), case_ids)
    model_source = "model" if isinstance(model, Segmenter) else model
    model = model if isinstance(model, Segmenter) else load_checkpoint(model, device)
    classes = list(range(model.n_classes)) if classes is None else [int(c) for c in classes]
    if any(c < 0 or c >= model.n_classes for c in classes):
        raise InputError("--classes", f"class ids must lie in 0..{model.n_classes - 1}")
    db = Path(db)
    run_params = {**params, "classes": classes}
    runner = _CaseRunner(model, method, params, classes, Path(data_dir) if data_dir else db.parent, db,
                         Path(nifti_dir) if nifti_dir else None,
                         PrecomputeSummary(store.run_id_for(method, run_params, model.checkpoint_sha256)))
    extra_names = check_roi_names(manifest, frame, model.label_names, model_source)
    with store.open_writer(db) as con:
        runner.roi_ids = store.upsert_rois(con, roi_specs(model.label_names, extra_names))
        store.ensure_run(con, runner.run_id, method, run_params, model.checkpoint_sha256, model.label_names,
                         source="precompute",
                         description=f"{method} on {Path(manifest).name}, network {model.network_config.get('name')}")
        done = store.done_cases(con, runner.run_id)
        todo = [r for r in frame.to_dict("records") if r["case_id"] not in done]
        runner.summary.skipped = [c for c in frame.case_id if c in done]
        last_publish = time.time()
        for row in tqdm(todo, desc=f"precompute {method}", unit="case", disable=not progress):
            runner.run(con, row)
            if time.time() - last_publish > PUBLISH_EVERY_S:
                store.publish(con, db)
                last_publish = time.time()
    return runner.summary


def _select_cases(frame, case_ids: Sequence[str] | None):
    if case_ids is None:
        return frame
    unknown = sorted(set(case_ids) - set(frame.case_id))
    if unknown:
        raise InputError("--cases", f"case id(s) not in the manifest: {', '.join(map(repr, unknown[:5]))}")
    return frame[frame.case_id.isin(list(case_ids))]


@dataclass
class _CaseRunner:
    """One run of precompute: computes a case and writes it in one transaction."""

    model: Segmenter
    method: str
    params: dict
    classes: list[int]
    data_dir: Path
    db: Path
    nifti_dir: Path | None
    summary: PrecomputeSummary
    roi_ids: dict[str, int] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    def run(self, con, row: dict) -> None:
        case_id, stage = row["case_id"], "load"
        try:
            started = time.time()
            case = load_case(row, self.model.preprocessing, n_labels=self.model.n_classes)
            stage = "explain"
            result = process_case(self.model, case, self.method, self.params, self.classes)
            stage = "store"
            artifact = self.data_dir / "artifacts" / self.run_id / f"{case_id}.npz"
            write_artifact(result.artifact, artifact)
            self._save_nifti(result, case)
            seconds = time.time() - started
            store.write_case(con, self.run_id, case_id, self._importance_rows(case_id, result, case),
                             self._dice_rows(case_id, result), os.path.relpath(artifact, self.db.parent),
                             seconds, case_row=case_record(row, case), region_rows=self._region_rows(case_id, result))
            self.summary.done.append(case_id)
            self.summary.seconds.append(seconds)
        except Exception as err:  # noqa: BLE001 - any failure of one case is recorded, the rest go on
            store.record_failure(con, self.run_id, case_id, stage, str(err))
            self.summary.failed.append(case_id)
            tqdm.write(f"failed {case_id} at {stage}: {' '.join(str(err).split())}")

    def _save_nifti(self, result: CaseResult, case: Case) -> None:
        if self.nifti_dir is None:
            return
        for row, c in enumerate(self.classes):
            name = f"{case.case_id}_{file_safe_name(self.model.label_names[c])}.nii.gz"
            save_like(result.attributions[row], case, self.nifti_dir / self.run_id / name)

    def _importance_rows(self, case_id: str, result: CaseResult, case: Case) -> list[list]:
        """Rows for the class RoIs and the extra RoIs this case has (the matrices' columns, in order)."""
        names = self.model.label_names
        target_ids = [self.roi_ids[names[c]] for c in self.classes]
        source_ids = [self.roi_ids[s] for s in list(names) + list(case.rois)]
        m = result.matrices
        return store.importance_rows(self.run_id, case_id, target_ids, source_ids, m["abs"], m["pos"], m["neg"])

    def _region_rows(self, case_id: str, result: CaseResult) -> list[list]:
        """Mean |attribution| of each explained class per voxel of each predicted class region."""
        if result.region_means is None:
            return []
        names = self.model.label_names
        return [[self.run_id, case_id, self.roi_ids[names[c]], self.roi_ids[names[b]], float(v)]
                for row, c in enumerate(self.classes) for b, v in enumerate(result.region_means[row])
                if np.isfinite(v)]

    def _dice_rows(self, case_id: str, result: CaseResult) -> list[list]:
        if result.dice is None:
            return []
        names = self.model.label_names
        return [[self.model.checkpoint_sha256, case_id, self.roi_ids[names[c]], float(d)]
                for c, d in enumerate(result.dice) if not np.isnan(d)]
