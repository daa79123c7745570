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
from agg2exp_core.aggregate import local_matrices
from agg2exp_core.attribution.registry import check_params, explain, get_method
from agg2exp_core.io.images import Case, load_case, save_like
from agg2exp_core.io.manifest import ROI_PREFIX, read_manifest, roi_columns
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


def process_case(model: Segmenter, case: Case, method: str, params: dict,
                 classes: Sequence[int], out: Path | None = None) -> CaseResult:
    """Prediction, Dice, attributions of every class and their RoI-importance matrices.

    ``out``: a .npy path where gradient methods stream the attributions (memory-mapped;
    without it they do so by themselves above ``attribution.sinks.STREAM_ABOVE_BYTES``).
    """
    pred = model.predict(case.image).argmax(0)
    dice = dice_per_class(pred, case.label, model.n_classes) if case.label is not None else None
    if method == "kernelshap":  # fcc / hybrid units are laid out in mm on the case's grid
        params = {"spacing": case.spacing, **params}
    if out is not None and "out" in get_method(method).parameters:
        params = {**params, "out": out}
    attributions = explain(model, case.image, method, classes=list(classes), mask=pred, device=model.device,
                           **params).float().numpy()
    # one class row at a time, so that aggregation's float64 copies are [1,*S], not [k,*S]
    rows = [local_matrices(attributions[j:j + 1], pred, model.n_classes, case.rois) for j in range(len(classes))]
    matrices = {kind: np.concatenate([r[kind] for r in rows]) for kind in rows[0]}
    return CaseResult(matrices, dice, slice_artifact(case, pred.numpy(), attributions, classes), attributions)


def precompute(manifest: str | Path, model: str | Path | Segmenter, db: str | Path, method: str = "vg",
               params: dict | None = None, classes: Sequence[int] | None = None, device: str = "auto",
               data_dir: str | Path | None = None, nifti_dir: str | Path | None = None,
               progress: bool = True, case_ids: Sequence[str] | None = None,
               scratch_dir: str | Path | None = None) -> PrecomputeSummary:
    """Explain every case of a manifest with one method; resumable; returns a summary.

    ``scratch_dir``: gradient attributions of each case stream to a .npy there (removed
    once the case is stored) instead of RAM; see ``process_case``.

    ``model``: a loaded ``Segmenter`` or the path of a checkpoint. All bad input (method,
    parameters, classes, case ids, manifest) is an ``InputError`` before anything is written.
    """
    method = get_method(method).name
    params = dict(params or {})
    check_params(method, params)
    if "out" in params:
        raise InputError("--params", "'out' is chosen per case by precompute; give --scratch-dir instead")
    frame = _select_cases(read_manifest(manifest), case_ids)
    model = model if isinstance(model, Segmenter) else load_checkpoint(model, device)
    classes = list(range(model.n_classes)) if classes is None else [int(c) for c in classes]
    if any(c < 0 or c >= model.n_classes for c in classes):
        raise InputError("--classes", f"class ids must lie in 0..{model.n_classes - 1}")
    db = Path(db)
    run_params = {**params, "classes": classes}
    runner = _CaseRunner(model, method, params, classes, Path(data_dir) if data_dir else db.parent, db,
                         Path(nifti_dir) if nifti_dir else None,
                         Path(scratch_dir) if scratch_dir else None,
                         PrecomputeSummary(store.run_id_for(method, run_params, model.checkpoint_sha256)))
    extra_names = [c[len(ROI_PREFIX):] for c in roi_columns(frame)]
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
    scratch_dir: Path | None
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
            scratch = self.scratch_dir / self.run_id / f"{case_id}.npy" if self.scratch_dir else None
            result = process_case(self.model, case, self.method, self.params, self.classes, scratch)
            stage = "store"
            artifact = self.data_dir / "artifacts" / self.run_id / f"{case_id}.npz"
            write_artifact(result.artifact, artifact)
            self._save_nifti(result, case)
            seconds = time.time() - started
            store.write_case(con, self.run_id, case_id, self._importance_rows(case_id, result, case),
                             self._dice_rows(case_id, result), os.path.relpath(artifact, self.db.parent),
                             seconds, case_row=case_record(row, case))
            self.summary.done.append(case_id)
            self.summary.seconds.append(seconds)
        except Exception as err:  # noqa: BLE001 - any failure of one case is recorded, the rest go on
            store.record_failure(con, self.run_id, case_id, stage, str(err))
            self.summary.failed.append(case_id)
            tqdm.write(f"failed {case_id} at {stage}: {' '.join(str(err).split())}")
        finally:
            if self.scratch_dir:  # the streamed attributions are in the store now (or the case failed)
                (self.scratch_dir / self.run_id / f"{case_id}.npy").unlink(missing_ok=True)

    def _save_nifti(self, result: CaseResult, case: Case) -> None:
        if self.nifti_dir is None:
            return
        for row, c in enumerate(self.classes):
            name = f"{case.case_id}_{self.model.label_names[c]}.nii.gz"
            save_like(result.attributions[row], case, self.nifti_dir / self.run_id / name)

    def _importance_rows(self, case_id: str, result: CaseResult, case: Case) -> list[list]:
        """Rows for the class RoIs and the extra RoIs this case has (the matrices' columns, in order)."""
        names = self.model.label_names
        target_ids = [self.roi_ids[names[c]] for c in self.classes]
        source_ids = [self.roi_ids[s] for s in list(names) + list(case.rois)]
        m = result.matrices
        return store.importance_rows(self.run_id, case_id, target_ids, source_ids, m["abs"], m["pos"], m["neg"])

    def _dice_rows(self, case_id: str, result: CaseResult) -> list[list]:
        if result.dice is None:
            return []
        names = self.model.label_names
        return [[self.model.checkpoint_sha256, case_id, self.roi_ids[names[c]], float(d)]
                for c, d in enumerate(result.dice) if not np.isnan(d)]
