"""Per-case pipeline: load -> predict -> Dice -> explain -> aggregate -> slices -> store.

A case is computed by ``compute_case`` (a pure function of the model and a ``CaseJob``, run by an
executor: in this process, or on Ray workers) and written by the driver, the store's only writer, in
one transaction per case: an interrupted run leaves only whole cases, and a rerun skips the cases
computed from the same input files. A failing case is recorded in ``failures``, the others go on; a
case whose process died, or that ran past ``case_timeout`` s, is held back unless ``retry_crashed``.
"""
from __future__ import annotations

import functools
import os
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from agg2exp_core import store
from agg2exp_core.aggregate import local_matrices, region_mean_attribution
from agg2exp_core.attribution.registry import check_params, check_params_for_model, explain, get_method
from agg2exp_core.errors import InputError
from agg2exp_core.io.headers import check_case_headers
from agg2exp_core.io.images import Case, load_case
from agg2exp_core.io.manifest import check_roi_names, read_manifest
from agg2exp_core.labels import roi_specs
from agg2exp_core.models import Segmenter, dice_per_class
from agg2exp_core.models.sources import ModelSpec
from agg2exp_core.models.uncertainty import TTASpec
from agg2exp_core.pipeline import case_meta, causal_stage, noise_stage, uncertainty_stage
from agg2exp_core.pipeline.artifacts import slice_artifact
from agg2exp_core.pipeline.case_files import CaseFiles, save_case_files
from agg2exp_core.pipeline.executors import (DEFAULT_CASE_TIMEOUT_S, CaseProgress, Completed, Executor,
                                             InProcessExecutor, ModelSource, check_timeout)
from agg2exp_core.pipeline.inputs import check_unchanged, file_identities, input_fingerprint, plan_cases
from agg2exp_core.pipeline.summary import PrecomputeSummary
from agg2exp_core.store.artifacts import record_artifact_root

PUBLISH_EVERY_S = 5.0


def case_record(row: dict, case: Case | None) -> dict:
    present = sorted(name for name, mask in (case.rois.items() if case else []) if mask.any())
    return {"case_id": row["case_id"], "dataset": row.get("dataset") or "default", "split": row.get("split") or "",
            "sex": row.get("sex"), "age": row.get("age"), "image_path": row.get("image"),
            "label_path": row.get("label") or None, "pathologies": ";".join(present)}


@dataclass(frozen=True)
class CaseJob:
    """One case to compute: everything a worker needs besides the model (small, picklable)."""

    row: dict
    method: str
    params: dict
    classes: tuple[int, ...]
    keep_attributions: bool = False  # full volumes, for --save-nifti
    extras: causal_stage.ExtrasSpec = field(default_factory=causal_stage.ExtrasSpec)
    donors: causal_stage.CohortDonors | None = None  # other cases of the cohort (causal runs)
    scratch: Path | None = None       # a .npy the gradient attributions stream to (removed after the case)
    uncertainty: TTASpec | None = None  # the model's uncertainty features to compute (None: already stored)

    @property
    def case_id(self) -> str:
        return str(self.row["case_id"])


@dataclass
class CaseResult:
    """What a case's computation returns to the driver (arrays, not yet files or rows)."""

    case_id: str
    matrices: dict[str, np.ndarray] | None = None
    dice: np.ndarray | None = None
    artifact: dict | None = None          # slice arrays; None once written (``artifact_path``)
    attributions: np.ndarray | None = None
    affine: np.ndarray | None = None
    roi_names: list[str] = field(default_factory=list)  # the case's extra RoIs (matrix columns after the classes)
    record: dict | None = None
    inputs: dict | None = None
    seconds: float = 0.0
    failure: tuple[str, str] | None = None  # (stage, message)
    artifact_path: Path | None = None
    extras: causal_stage.CaseExtras | None = None  # causal matrices, component effects, relevance masks
    region_means: np.ndarray | None = None  # [explained classes, n_classes]: mean |attribution| per region voxel
    noise: noise_stage.CaseNoise | None = None  # SmoothGrad's sampling noise per cell
    uncertainty: uncertainty_stage.Features | None = None  # TTA / fold-ensemble features per class


def process_case(model: Segmenter, case: Case, method: str, params: dict, classes: Sequence[int],
                 extras: causal_stage.ExtrasSpec = causal_stage.ExtrasSpec(),
                 donors: causal_stage.CohortDonors | None = None, out: Path | None = None,
                 uncertainty: TTASpec | None = None):
    """(matrices, Dice, slice artefact, attributions, causal extras, region means, sampling noise, uncertainty):
    prediction, Dice, every class's attributions, their RoI-importance matrices, mean |attribution| per region
    voxel, SmoothGrad's standard errors per cell (``noise_stage``) and, given a ``TTASpec``, the model's
    uncertainty features from the same clean prediction (``uncertainty_stage``). ``out``: a .npy path where gradient methods
    stream the attributions (memory-mapped; without it they do so above ``sinks.STREAM_ABOVE_BYTES``).
    """
    logits = model.predict(case.image)
    pred = logits.argmax(0)
    features = uncertainty_stage.case_features(model, case, logits, uncertainty)
    del logits
    dice = dice_per_class(pred, case.label, model.n_classes) if case.label is not None else None
    case_extras, recorder, note = None, None, None
    if method == "causal" or extras.relevance_share is not None:
        attributions, case_extras = causal_stage.explain_case(model, case, pred, method, params, classes, extras,
                                                              donors)
    else:
        if method == "kernelshap":  # fcc / hybrid units are laid out in mm on the case's grid
            params = {"spacing": case.spacing, **params}
        if out is not None and "out" in get_method(method).parameters:
            params = {**params, "out": out}
        recorder, note = noise_stage.recorder_for(method, params, len(classes), case.image.shape[1:])
        if recorder is not None:
            params = {**params, "sample_maps": recorder}
        attributions = explain(model, case.image, method, classes=list(classes), mask=pred, device=model.device,
                               **params).float().numpy()
    # one class row at a time, so that aggregation's float64 copies are [1,*S], not [k,*S]
    rows = [local_matrices(attributions[j:j + 1], pred, model.n_classes, case.rois) for j in range(len(classes))]
    matrices = {kind: np.concatenate([r[kind] for r in rows]) for kind in rows[0] if kind != "volume"}
    matrices["volume"] = rows[0]["volume"]  # one share per source RoI, the same for every class row
    region_means = np.concatenate([region_mean_attribution(attributions[j:j + 1], pred, model.n_classes)
                                   for j in range(len(classes))])
    artifact = slice_artifact(case, pred.numpy(), attributions, classes, model.preprocessing)
    if case_extras is not None:
        artifact.update(case_extras.artifact())
    noise = noise_stage.case_noise(recorder, note, pred, model.n_classes, case.rois)
    return matrices, dice, artifact, attributions, case_extras, region_means, noise, features


def compute_case(model: Segmenter, job: CaseJob) -> CaseResult:
    """Everything of one case that needs the model; its own errors come back as ``failure``."""
    started, stage = time.time(), "load"
    try:
        check_case_headers(job.row, model.preprocessing.target_spacing)  # sizes and grids: nothing read yet
        identities, inputs = file_identities(job.row), input_fingerprint(job.row)  # hashed before the read,
        case = load_case(job.row, model.preprocessing, n_labels=model.n_classes)
        check_unchanged(identities, job.row)  # and confirmed to be what was read
        stage = "explain"
        matrices, dice, artifact, attributions, extras, region_means, noise, features = process_case(
            model, case, job.method, job.params, job.classes, job.extras, job.donors, job.scratch, job.uncertainty)
        attributions = np.array(attributions) if job.keep_attributions else None  # off the scratch file
    except Exception as err:  # noqa: BLE001 - any failure of one case is recorded, the rest go on
        return CaseResult(job.case_id, failure=(stage, str(err)))
    finally:
        if job.scratch is not None:  # the streamed attributions live on only in the results
            job.scratch.unlink(missing_ok=True)
    return CaseResult(job.case_id, matrices, dice, artifact, attributions,
                      case.affine, list(case.rois), case_record(job.row, case), inputs, time.time() - started,
                      extras=extras, region_means=region_means, noise=noise, uncertainty=features)


def compute_and_save(files: CaseFiles, model: Segmenter, job: CaseJob) -> CaseResult:
    """A worker's case on shared storage: compute, then write the files itself."""
    return save_case_files(files, compute_case(model, job), job.classes)


def precompute(manifest: str | Path, model: str | Path | ModelSpec | Segmenter, db: str | Path, method: str = "vg",
               params: dict | None = None, classes: Sequence[int] | None = None, device: str = "auto",
               data_dir: str | Path | None = None, nifti_dir: str | Path | None = None,
               progress: bool = True, case_ids: Sequence[str] | None = None, executor: Executor | None = None,
               shared_files: bool = False, retry_crashed: bool = False,
               scratch_dir: str | Path | None = None, build_step: str | None = None,
               case_timeout: float | None = DEFAULT_CASE_TIMEOUT_S, cohort_root: str | Path | None = None,
               allow_outside_root: bool = False, uncertainty: bool = True) -> PrecomputeSummary:
    """Explain every case of a manifest with one method; resumable; returns a summary.

    ``model``: a loaded ``Segmenter``, a model path or a ``ModelSpec`` (``load_model``). ``executor``: where cases
    are computed (default: this process). ``shared_files``: workers write the artefacts
    themselves (``data_dir`` is shared storage, at the same path on every node).
    ``retry_crashed``: compute again the cases during which a previous run died.
    ``scratch_dir``: gradient attributions of each case stream to a .npy there (removed once
    the case is computed) instead of RAM; see ``process_case``. ``build_step``: record the
    run's progress as that step of the store's ``build_status``. ``case_timeout``: seconds before a case is ended,
    failed at stage ``timeout``, held back like a crash (0: none). ``cohort_root``, ``allow_outside_root``: see
    ``read_manifest``. ``uncertainty``: also the model's TTA / fold-ensemble features of every case
    (``case_uncertainty``, once per model and case). All bad input (method, parameters, classes, case ids, manifest, model) is an
    ``InputError`` before anything is written.
    """
    method = get_method(method).name
    params = dict(params or {})
    run_params = {**params}
    extras = causal_stage.ExtrasSpec.pop_from(method, params)
    check_params(method, params)
    if "out" in params or "sample_maps" in params:
        raise InputError("--params", "'out' and 'sample_maps' are chosen per case by precompute "
                         "(give --scratch-dir for 'out')")
    case_timeout = check_timeout(case_timeout)
    cohort = read_manifest(manifest, cohort_root, allow_outside_root)
    frame = _select_cases(cohort, case_ids)
    model_source = "model" if isinstance(model, Segmenter) else model
    executor = executor or InProcessExecutor()
    source = ModelSource(model, device)
    model = source.load("cpu" if executor.isolates_cases and not isinstance(model, Segmenter) else None)
    if not executor.isolates_cases:
        source = ModelSource(model)  # computed here, with the model already loaded
    classes = list(range(model.n_classes)) if classes is None else [int(c) for c in classes]
    if any(c < 0 or c >= model.n_classes for c in classes):
        raise InputError("--classes", f"class ids must lie in 0..{model.n_classes - 1}")
    check_params_for_model(method, model, params)  # e.g. Seg-Grad-CAM's layer: fail before the store
    db = Path(db)
    run_params = {**run_params, "classes": classes}
    summary = PrecomputeSummary(store.run_id_for(method, run_params, model.checkpoint_sha256))
    files = CaseFiles(Path(data_dir or db.parent).resolve(), summary.run_id, tuple(model.label_names),
                      Path(nifti_dir).resolve() if nifti_dir else None)  # absolute: workers run elsewhere
    extra_names = check_roi_names(manifest, frame, model.label_names, model_source)
    donors = _cohort_donors(method, params, cohort, model)
    scratch = Path(scratch_dir).resolve() / summary.run_id if scratch_dir else None
    with executor, store.open_writer(db) as con:  # workers first: a cluster out of reach writes nothing
        roi_ids = store.upsert_rois(con, roi_specs(model.label_names, extra_names))
        store.write_case_fields(con, case_meta.cohort_fields(manifest, cohort, frame), frame.case_id)  # every rerun
        store.ensure_run(con, summary.run_id, method, {**run_params, "model": model.provenance()},
                         model.checkpoint_sha256, model.label_names,
                         source="precompute",
                         description=f"{method} on {Path(manifest).name}, network {model.network_config.get('name')}")
        record_artifact_root(con, summary.run_id, files.data_dir / "artifacts" / summary.run_id)  # readers allow-list it
        todo = plan_cases(con, summary, frame.to_dict("records"), retry_crashed)
        tta = uncertainty_stage.cases_needing(con, model.checkpoint_sha256, [str(r["case_id"]) for r in todo],
                                              summary.recomputed) if uncertainty else set()
        jobs = [CaseJob(row, method, params, tuple(classes), files.nifti_dir is not None, extras, donors,
                        scratch / f"{row['case_id']}.npy" if scratch else None,
                        TTASpec() if str(row["case_id"]) in tta else None) for row in todo]
        compute = functools.partial(compute_and_save, files) if shared_files else compute_case
        writer = _CaseWriter(con, db, files, summary, model, classes, roi_ids, executor)
        report = (store.build_step_reporter(con, build_step, len(frame), len(frame) - len(jobs), run_id=summary.run_id)
                  if build_step else None)
        bar = CaseProgress(len(jobs), f"precompute {method}", progress, executor, report)
        for note in summary.notes:
            bar.note(note)
        try:
            with closing(executor.map(compute, source, jobs, on_start=writer.started,
                                      timeout_s=case_timeout)) as outcomes:
                for outcome in outcomes:
                    bar.update(writer.write(outcome))
                    writer.publish_due()
        except KeyboardInterrupt:
            writer.interrupted()
            raise
        finally:
            bar.close()
        if uncertainty:  # cases done before the features existed get them now, once
            _fill_skipped(con, model, frame, summary, progress)
    return summary


def _fill_skipped(con, model: Segmenter, frame, summary: PrecomputeSummary, progress: bool) -> None:
    skipped = set(summary.skipped)
    filled = uncertainty_stage.fill_missing(con, model, [r for r in frame.to_dict("records")
                                                         if str(r["case_id"]) in skipped], progress=progress)
    if filled.done or filled.failed:
        summary.notes.append(f"uncertainty features added to {len(filled.done)} case(s) done before"
                             + (f"; {len(filled.failed)} failed" if filled.failed else ""))
        tqdm.write(summary.notes[-1])


def _cohort_donors(method: str, params: dict, frame, model: Segmenter) -> causal_stage.CohortDonors | None:
    """Donor images of a causal run: other cases of the manifest (see ``causal_stage``)."""
    if not causal_stage.needs_donors(method, params):
        return None
    return causal_stage.CohortDonors(frame.to_dict("records"), model.preprocessing,
                                     int(params.get("n_samples", 20)), int(params.get("seed", 0) or 0))


def _select_cases(frame, case_ids: Sequence[str] | None):
    if case_ids is None:
        return frame
    unknown = sorted(set(case_ids) - set(frame.case_id))
    if unknown:
        raise InputError("--cases", f"case id(s) not in the manifest: {', '.join(map(repr, unknown[:5]))}")
    return frame[frame.case_id.isin(list(case_ids))]


@dataclass
class _CaseWriter:
    """The driver's side of a run: writes each outcome in one transaction, publishes snapshots."""

    con: object
    db: Path
    files: CaseFiles
    summary: PrecomputeSummary
    model: Segmenter
    classes: list[int]
    roi_ids: dict[str, int]
    executor: Executor
    in_flight: set[str] = field(default_factory=set)
    last_publish: float = field(default_factory=time.time)

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    def started(self, job: CaseJob) -> None:
        """Before a case is computed in this very process: a marker that survives its death."""
        if not self.executor.isolates_cases:
            store.mark_started(self.con, self.run_id, job.case_id)
            self.in_flight.add(job.case_id)

    def interrupted(self) -> None:
        """Ctrl-C / SIGTERM: the cases in flight did not kill the process; forget their markers."""
        for case_id in self.in_flight:
            store.clear_started(self.con, self.run_id, case_id)

    def write(self, outcome: Completed) -> bool:
        """Store one outcome (results, or its failure, once); True when the case is done."""
        case_id, result = outcome.job.case_id, outcome.result
        self.in_flight.discard(case_id)
        if outcome.failure("explain"):
            return self._failed(case_id, *outcome.failure("explain"))
        result = save_case_files(self.files, result, self.classes)  # no-op when a worker wrote them
        if result.failure:
            return self._failed(case_id, *result.failure)
        try:
            store.write_case(self.con, self.run_id, case_id, self._importance_rows(result), self._dice_rows(result),
                             os.path.relpath(result.artifact_path, self.db.parent), result.seconds,
                             case_row=result.record, results=self._result_rows(result), inputs=result.inputs,
                             uncertainty=self._uncertainty_rows(result))
        except Exception as err:  # noqa: BLE001
            return self._failed(case_id, "store", str(err))
        self.summary.done.append(case_id)
        self.summary.seconds.append(result.seconds)
        return True

    def publish_due(self) -> None:
        """A snapshot for readers, at most every PUBLISH_EVERY_S (after the progress is recorded too)."""
        if time.time() - self.last_publish > PUBLISH_EVERY_S:
            store.publish(self.con, self.db)
            self.last_publish = time.time()

    def _failed(self, case_id: str, stage: str, message: str) -> bool:
        store.record_failure(self.con, self.run_id, case_id, stage, message)
        self.summary.failed.append(case_id)
        tqdm.write(f"failed {case_id} at {stage}: {' '.join(str(message).split())}")
        return False

    def _importance_rows(self, result: CaseResult) -> list[list]:
        """Rows for the class RoIs and the extra RoIs this case has (the matrices' columns, in order)."""
        names = self.model.label_names
        target_ids = [self.roi_ids[names[c]] for c in self.classes]
        source_ids = [self.roi_ids[s] for s in list(names) + result.roi_names]
        m = result.matrices
        return store.importance_rows(self.run_id, result.case_id, target_ids, source_ids, m["abs"], m["pos"], m["neg"],
                                     m["volume"], m["lift"])

    def _result_rows(self, result: CaseResult) -> dict[str, list[list]]:
        """Rows of the per-case result tables: region means, sampling noise, and the causal tables if any."""
        class_roi_ids = [self.roi_ids[n] for n in self.model.label_names]
        rows = {"region_attribution": self._region_rows(result, class_roi_ids),
                "sampling_noise": noise_stage.noise_rows(self.run_id, result.case_id, result.noise, result.matrices,
                                                         [class_roi_ids[c] for c in self.classes],
                                                         class_roi_ids + [self.roi_ids[s] for s in result.roi_names])}
        if result.noise is not None and result.noise.note:
            tqdm.write(f"{result.case_id}: {result.noise.note}")
            self.summary.notes.append(f"{result.case_id}: {result.noise.note}")
        if result.extras is not None:
            rows.update(result.extras.rows(self.run_id, result.case_id, self.classes, class_roi_ids))
        return rows

    def _region_rows(self, result: CaseResult, class_roi_ids: list[int]) -> list[list]:
        """Mean |attribution| of each explained class per voxel of each predicted class region."""
        if result.region_means is None:
            return []
        return [[self.run_id, result.case_id, class_roi_ids[c], class_roi_ids[b], float(v)]
                for row, c in enumerate(self.classes) for b, v in enumerate(result.region_means[row])
                if np.isfinite(v)]

    def _uncertainty_rows(self, result: CaseResult) -> tuple[str, list[list]] | None:
        if result.uncertainty is None:
            return None
        sha, class_roi_ids = self.model.checkpoint_sha256, [self.roi_ids[n] for n in self.model.label_names]
        return sha, uncertainty_stage.feature_rows(sha, result.case_id, result.uncertainty, class_roi_ids)

    def _dice_rows(self, result: CaseResult) -> list[list]:
        if result.dice is None:
            return []
        names = self.model.label_names
        return [[self.model.checkpoint_sha256, result.case_id, self.roi_ids[names[c]], float(d)]
                for c, d in enumerate(result.dice) if not np.isnan(d)]
