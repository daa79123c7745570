"""Evaluation of attribution methods over cases of a cohort: one evaluation run per method.

Every method explains the model through the model's own sliding window. One job is one
method on one case (so the progress bar moves, and its ETA means something, also for a
few long cases, and the executor's workers share the work evenly); its metrics and curves
land in one transaction, and a failing job is recorded in ``failures`` while the others
go on. The rows do not depend on how the jobs are split: the faithfulness subsets, noisy
copies and perturbation game are seeded per case.
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from agg2exp_core import store
from agg2exp_core.analysis.evaluation import EvaluationConfig, evaluate_case
from agg2exp_core.attribution.registry import check_params, check_params_for_model, get_method
from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.labels import roi_specs
from agg2exp_core.models import Segmenter
from agg2exp_core.models.sources import ModelSpec
from agg2exp_core.pipeline import case_meta
from agg2exp_core.pipeline.executors import (DEFAULT_CASE_TIMEOUT_S, CaseProgress, Completed, Executor,
                                             InProcessExecutor, ModelSource, check_timeout)

DEFAULT_METHODS = ("vg", "smoothgrad", "ig", "kernelshap", "causal")


@dataclass
class EvaluationSummary:
    run_ids: dict[str, str]
    done: list[str] = field(default_factory=list)     # cases evaluated with every method
    failed: list[str] = field(default_factory=list)   # cases where a method failed
    _left: dict[str, int] = field(default_factory=dict, repr=False)  # case -> jobs not yet written

    def finished(self, case_id: str, ok: bool) -> None:
        """One job of a case is written (or failed); the case counts once all its jobs are."""
        if not ok and case_id not in self.failed:
            self.failed.append(case_id)
        self._left[case_id] = self._left.get(case_id, len(self.run_ids)) - 1
        if self._left[case_id] == 0 and case_id not in self.failed:
            self.done.append(case_id)

    def line(self) -> str:
        return (f"evaluated {len(self.done)} case(s) with {', '.join(self.run_ids)}"
                f"{f'; {len(self.failed)} failed' if self.failed else ''}")


@dataclass(frozen=True)
class EvaluationJob:
    """One case to evaluate with some methods, usually one (small, picklable)."""

    row: dict
    methods: tuple[str, ...]
    classes: tuple[int, ...]
    config: EvaluationConfig
    params: tuple[tuple[str, dict], ...] = ()  # explain parameters of some methods (default: theirs)

    @property
    def case_id(self) -> str:
        return str(self.row["case_id"])


@dataclass
class EvaluationResult:
    case_id: str
    scores: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    failure: tuple[str, str] | None = None  # (stage, message)


def compute_evaluation(model: Segmenter, job: EvaluationJob) -> EvaluationResult:
    """All methods' metrics and curves of one case; its own errors come back as ``failure``."""
    try:
        case = load_case(job.row, model.preprocessing, n_labels=model.n_classes)
        params = dict(job.params)
        scores, curves = evaluate_case(model, case.image, {m: dict(params.get(m, {})) for m in job.methods},
                                       list(job.classes), job.config)
    except Exception as err:  # noqa: BLE001 - one bad case must not stop the cohort
        return EvaluationResult(job.case_id, failure=("evaluate", f"{type(err).__name__}: {err}"))
    return EvaluationResult(job.case_id, scores, curves)


def evaluate_cohort(manifest: str | Path, model: str | Path | ModelSpec | Segmenter, db: str | Path,
                    methods: Sequence[str] = DEFAULT_METHODS, classes: Sequence[str | int] | None = None,
                    config: EvaluationConfig = EvaluationConfig(), max_cases: int | None = 3,
                    split: str = "", device: str = "auto", progress: bool = True,
                    executor: Executor | None = None, build_step: str | None = None,
                    method_params: Mapping[str, Mapping] | None = None,
                    case_timeout: float | None = DEFAULT_CASE_TIMEOUT_S, cohort_root: str | Path | None = None,
                    allow_outside_root: bool = False) -> EvaluationSummary:
    """Evaluate ``methods`` on the first ``max_cases`` cases (of ``split``) and store the results.

    ``classes``: class names or channel ids (default: all but background). ``executor``:
    where cases are computed (default: this process); the store is written here and published
    after each case (so readers see the evaluation grow). ``build_step``: record the progress
    as that step of the store's ``build_status``. ``method_params``: explain parameters per
    method (e.g. a KernelSHAP budget; part of that method's evaluation run id), default the methods' own.
    ``case_timeout``, ``cohort_root``, ``allow_outside_root``: as for ``precompute``.
    """
    methods = [get_method(m).name for m in methods]
    case_timeout = check_timeout(case_timeout)
    frame = cohort = read_manifest(manifest, cohort_root, allow_outside_root)
    if split:
        frame = frame[frame["split"] == split]
    if max_cases is not None:
        frame = frame.head(max(int(max_cases), 0))
    if frame.empty:
        raise InputError(manifest, f"no case to evaluate (split '{split or 'any'}')")
    executor = executor or InProcessExecutor()
    source = ModelSource(model, device)
    model = source.load("cpu" if executor.isolates_cases and not isinstance(model, Segmenter) else None)
    if not executor.isolates_cases:
        source = ModelSource(model)
    names = list(model.label_names)
    class_ids = resolve_classes(classes, names)
    settings = {**asdict(config), "classes": class_ids}
    params = {get_method(m).name: dict(p) for m, p in (method_params or {}).items()}
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise InputError("method_params", f"for method(s) not evaluated: {', '.join(unknown)}")
    for name, values in params.items():
        check_params(name, values)
    for name in methods:  # e.g. Seg-Grad-CAM's layer on this model: fail before the store
        check_params_for_model(name, model, params.get(name, {}))
    run_settings = {m: {"evaluation": settings, **({"params": params[m]} if params.get(m) else {})} for m in methods}
    summary = EvaluationSummary({m: store.run_id_for(f"eval-{m}", run_settings[m], model.checkpoint_sha256,
                                                     "evaluate") for m in methods})
    with executor, store.open_writer(db) as con:  # workers first: a cluster out of reach writes nothing
        roi_ids = store.upsert_rois(con, roi_specs(tuple(names)))
        store.write_new_case_fields(con, case_meta.cohort_fields(manifest, cohort, frame), frame.case_id)
        store.register_new_cases(con, frame.rename(columns={"image": "image_path", "label": "label_path"}))
        for name, run_id in summary.run_ids.items():
            store.ensure_run(con, run_id, name, {**run_settings[name], "model": model.provenance()},
                             model.checkpoint_sha256, names,
                             source="evaluate", description="attribution-method evaluation")
        jobs = [EvaluationJob(row, (m,), tuple(class_ids), config, tuple(params.items()))
                for row in frame.to_dict("records") for m in methods]
        target_ids = {c: roi_ids[names[c]] for c in class_ids}
        report = store.build_step_reporter(con, build_step, len(jobs), unit="method runs") if build_step else None
        bar = CaseProgress(len(jobs), f"evaluate {len(methods)} methods on {len(frame)} case(s)", progress,
                           executor, report, unit="method")
        try:
            with closing(executor.map(compute_evaluation, source, jobs, timeout_s=case_timeout)) as outcomes:
                for outcome in outcomes:
                    bar.update(_write_evaluation(con, outcome, summary, target_ids))
                    store.publish(con, db)
        finally:
            bar.close()
    return summary


def _write_evaluation(con, outcome: Completed, summary: EvaluationSummary, target_ids: dict[int, int]) -> bool:
    """One job's rows (a case, its methods) in one transaction, or its failure once per run."""
    case_id, result = outcome.job.case_id, outcome.result
    run_ids = {m: summary.run_ids[m] for m in outcome.job.methods}
    failure = outcome.failure("evaluate") or result.failure
    if failure is None:
        try:
            store.write_method_eval(con, run_ids, case_id, result.scores, result.curves, target_ids)
            summary.finished(case_id, True)
            return True
        except Exception as err:  # noqa: BLE001
            failure = ("store", f"{type(err).__name__}: {err}")
    summary.finished(case_id, False)
    for run_id in run_ids.values():
        store.record_failure(con, run_id, case_id, *failure)
    tqdm.write(f"evaluate: {case_id} ({', '.join(run_ids)}): failed: {failure[1]}")
    return False


def resolve_classes(classes: Sequence[str | int] | None, names: Sequence[str]) -> list[int]:
    """Channel ids from names or ids; None or empty = all but background."""
    if not classes:
        return [i for i, n in enumerate(names) if n != "background"] or list(range(len(names)))
    out = []
    for token in classes:
        text = str(token).strip()
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
            out.append(int(text))
        elif text in names:
            out.append(list(names).index(text))
        else:
            raise InputError("--classes", f"unknown class '{text}' (model classes: {', '.join(names)})")
    return out
