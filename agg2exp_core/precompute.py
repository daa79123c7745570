"""Per-case pipeline: load -> predict -> Dice -> explain -> aggregate -> slices -> store.

One transaction per case, so an interrupted run leaves only whole cases behind and a
rerun of the same configuration skips them. A failing case is recorded in ``failures``
and the others go on.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from agg2exp_core import store
from agg2exp_core.aggregate import local_matrices
from agg2exp_core.artifacts import ATTRVOL_MAX_SIDE, attribution_slices, block_factors, block_mean
from agg2exp_core.attribution import explain
from agg2exp_core.cohort import Case, load_case, read_manifest, roi_columns, save_like
from agg2exp_core.errors import InputError
from agg2exp_core.labels import roi_specs
from agg2exp_core.model import Segmenter, dice_per_class, load_checkpoint

METHODS = ("vg", "smoothgrad", "ig", "kernelshap")
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


def largest_cross_sections(mask: np.ndarray) -> np.ndarray:
    """Slice index along x, y, z where a mask's cross-section is largest (centre if empty)."""
    if not mask.any():
        return np.array(mask.shape) // 2
    return np.array([mask.sum(axis=tuple(a for a in range(3) if a != axis)).argmax() for axis in range(3)])


def slice_artifact(case: Case, pred: np.ndarray, attributions: np.ndarray, classes: Sequence[int],
                   volume_max_side: int = ATTRVOL_MAX_SIDE) -> dict:
    """Compact arrays for the case viewer (see docs/ARCHITECTURE.md, "Slice artefacts")."""
    arrays = {"ct": np.clip(np.round(case.hu()), -1024, 3071).astype(np.int16),
              "pred": pred.astype(np.uint8), "spacing": np.asarray(case.spacing, dtype=np.float32)}
    if case.label is not None:
        arrays["gt"] = case.label.numpy().astype(np.uint8)
    for name, mask in case.rois.items():
        arrays[f"roi_{name}"] = mask.astype(np.uint8)
    block = block_factors(pred.shape, volume_max_side)
    arrays["attrvol_block"] = block
    for row, c in enumerate(classes):
        index = largest_cross_sections(pred == c)
        arrays[f"index_{c}"] = index.astype(np.int32)
        volume = attributions[row]
        for axis, plane in attribution_slices(volume, index).items():
            arrays[f"attr_{c}_{axis}"] = plane
        arrays[f"attrvol_{c}"] = block_mean(volume, block)
    return arrays


def write_artifact(arrays: dict, path: Path) -> None:
    """Write an npz atomically, so a crash never leaves a half-written artefact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


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
                 classes: Sequence[int]) -> CaseResult:
    """Prediction, Dice, attributions of every class and their RoI-importance matrices."""
    logits = model.predict(case.image)
    pred = logits.argmax(0)
    dice = dice_per_class(pred, case.label, model.n_classes) if case.label is not None else None
    attributions = explain(model.network, case.image, method, classes=list(classes), mask=pred,
                           roi_size=model.roi_size, overlap=model.overlap, device=model.device, **params)
    attributions = attributions.float().numpy()
    matrices = local_matrices(attributions, pred.numpy(), model.n_classes, case.rois)
    return CaseResult(matrices, dice, slice_artifact(case, pred.numpy(), attributions, classes), attributions)


def precompute(manifest: str | Path, checkpoint: str | Path, db: str | Path, method: str = "vg",
               params: dict | None = None, classes: Sequence[int] | None = None, device: str = "auto",
               data_dir: str | Path | None = None, nifti_dir: str | Path | None = None,
               progress: bool = True, case_ids: Sequence[str] | None = None) -> PrecomputeSummary:
    """Explain every case of a manifest with one method; resumable; returns a summary."""
    if method not in METHODS:
        raise InputError("--method", f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    params = dict(params or {})
    frame = read_manifest(manifest)
    if case_ids is not None:
        unknown = sorted(set(case_ids) - set(frame.case_id))
        if unknown:
            raise InputError("--cases", f"case id(s) not in the manifest: {', '.join(map(repr, unknown[:5]))}")
        frame = frame[frame.case_id.isin(list(case_ids))]
    model = load_checkpoint(checkpoint, device)
    classes = list(range(model.n_classes)) if classes is None else [int(c) for c in classes]
    if any(c < 0 or c >= model.n_classes for c in classes):
        raise InputError("--classes", f"class ids must lie in 0..{model.n_classes - 1}")
    db = Path(db)
    data_dir = Path(data_dir) if data_dir else db.parent
    extra_names = [c[len("roi:"):] for c in roi_columns(frame)]
    run_id = store.run_id_for(method, {**params, "classes": classes}, model.checkpoint_sha256)
    summary = PrecomputeSummary(run_id)
    with store.open_writer(db) as con:
        roi_ids = store.upsert_rois(con, roi_specs(model.label_names, extra_names))
        store.ensure_run(con, run_id, method, {**params, "classes": classes}, model.checkpoint_sha256,
                         model.label_names, source="precompute",
                         description=f"{method} on {Path(manifest).name}, network {model.network_config.get('name')}")
        done = store.done_cases(con, run_id)
        todo = [r for r in frame.to_dict("records") if r["case_id"] not in done]
        summary.skipped = [c for c in frame.case_id if c in done]
        last_publish = time.time()
        for row in tqdm(todo, desc=f"precompute {method}", unit="case", disable=not progress):
            _run_one(con, model, row, method, params, classes, roi_ids, data_dir, db,
                     nifti_dir, summary)
            if time.time() - last_publish > PUBLISH_EVERY_S:
                store.publish(con, db)
                last_publish = time.time()
    return summary


def _run_one(con, model, row, method, params, classes, roi_ids, data_dir, db, nifti_dir, summary):
    case_id = row["case_id"]
    stage = "load"
    try:
        started = time.time()
        case = load_case(row, model.preprocessing, n_labels=model.n_classes)
        stage = "explain"
        result = process_case(model, case, method, params, classes)
        stage = "store"
        artifact_rel = Path("artifacts") / summary.run_id / f"{case_id}.npz"
        write_artifact(result.artifact, data_dir / artifact_rel)
        if nifti_dir:
            for row_i, c in enumerate(classes):
                save_like(result.attributions[row_i], case, Path(nifti_dir) / summary.run_id / f"{case_id}_{model.label_names[c]}.nii.gz")
        rows = _importance_rows(summary.run_id, case_id, classes, result.matrices, model.label_names,
                                roi_ids, list(case.rois))
        dice_rows = [] if result.dice is None else [
            [model.checkpoint_sha256, case_id, roi_ids[model.label_names[c]], float(d)]
            for c, d in enumerate(result.dice) if not np.isnan(d)]
        seconds = time.time() - started
        store.write_case(con, summary.run_id, case_id, rows, dice_rows, _relative(data_dir / artifact_rel, db),
                         seconds, case_row=case_record(row, case))
        summary.done.append(case_id)
        summary.seconds.append(seconds)
    except Exception as err:  # noqa: BLE001 - any failure of one case is recorded, the rest go on
        store.record_failure(con, summary.run_id, case_id, stage, str(err))
        summary.failed.append(case_id)
        tqdm.write(f"failed {case_id} at {stage}: {' '.join(str(err).split())}")


def _importance_rows(run_id, case_id, classes, matrices, label_names, roi_ids, extra_present):
    """Rows for the class RoIs and the extra RoIs this case has (the matrices' columns, in order)."""
    target_ids = [roi_ids[label_names[c]] for c in classes]
    source_ids = [roi_ids[s] for s in list(label_names) + list(extra_present)]
    return store.importance_rows(run_id, case_id, target_ids, source_ids, matrices["abs"],
                                 matrices["pos"], matrices["neg"])


def _relative(path: Path, db: Path) -> str:
    return os.path.relpath(path, db.parent)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("precompute", help="attributions and RoI-importance matrices of a cohort")
    parser.add_argument("--manifest", required=True, type=Path, help="cohort manifest CSV")
    parser.add_argument("--checkpoint", required=True, type=Path, help="self-describing checkpoint (.pt)")
    parser.add_argument("--db", required=True, type=Path, help="DuckDB store (published file)")
    parser.add_argument("--method", default="vg", choices=METHODS)
    parser.add_argument("--params", default="{}", help='JSON of method parameters, e.g. \'{"n_samples": 8}\'')
    parser.add_argument("--classes", help="comma-separated class ids to explain (default: all)")
    parser.add_argument("--cases", help="comma-separated case ids (default: all)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0 ...")
    parser.add_argument("--data-dir", type=Path, help="where slice artefacts go (default: the store's folder)")
    parser.add_argument("--save-nifti", type=Path, help="also write full-volume attributions as NIfTI here")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as err:
        raise InputError("--params", f"not valid JSON ({err})") from None
    if not isinstance(params, dict):
        raise InputError("--params", "must be a JSON object")
    try:
        classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    except ValueError:
        raise InputError("--classes", f"expected comma-separated class ids, got '{args.classes}'") from None
    cases = [c.strip() for c in args.cases.split(",")] if args.cases else None
    summary = precompute(args.manifest, args.checkpoint, args.db, args.method, params, classes, args.device,
                         args.data_dir, args.save_nifti, case_ids=cases)
    print(summary.line())
    return 1 if summary.failed else 0
