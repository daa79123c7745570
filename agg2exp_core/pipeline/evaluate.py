"""Evaluation of attribution methods over cases of a cohort: one evaluation run per method.

Every method explains the model through the model's own sliding window; a case's metrics
and curves of all methods land in one transaction, and a failing case is recorded in
``failures`` while the others go on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from agg2exp_core import store
from agg2exp_core.analysis.evaluation import EvaluationConfig, evaluate_case
from agg2exp_core.attribution.registry import get_method
from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.labels import roi_specs
from agg2exp_core.models import Segmenter
from agg2exp_core.models.sources import ModelSpec, load_model

DEFAULT_METHODS = ("vg", "smoothgrad", "ig", "kernelshap", "causal")


@dataclass
class EvaluationSummary:
    run_ids: dict[str, str]
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"evaluated {len(self.done)} case(s) with {', '.join(self.run_ids)}"
                f"{f'; {len(self.failed)} failed' if self.failed else ''}")


def evaluate_cohort(manifest: str | Path, model: str | Path | ModelSpec | Segmenter, db: str | Path,
                    methods: Sequence[str] = DEFAULT_METHODS, classes: Sequence[str | int] | None = None,
                    config: EvaluationConfig = EvaluationConfig(), max_cases: int | None = 3,
                    split: str = "", device: str = "auto", progress: bool = True) -> EvaluationSummary:
    """Evaluate ``methods`` on the first ``max_cases`` cases (of ``split``) and store the results.

    ``classes``: class names or channel ids (default: all but background).
    """
    methods = [get_method(m).name for m in methods]
    frame = read_manifest(manifest)
    if split:
        frame = frame[frame["split"] == split]
    if max_cases is not None:
        frame = frame.head(max(int(max_cases), 0))
    if frame.empty:
        raise InputError(manifest, f"no case to evaluate (split '{split or 'any'}')")
    model = load_model(model, device=device)
    names = list(model.label_names)
    class_ids = resolve_classes(classes, names)
    settings = {**asdict(config), "classes": class_ids}
    summary = EvaluationSummary({m: store.run_id_for(f"eval-{m}", {"evaluation": settings}, model.checkpoint_sha256,
                                                     "evaluate") for m in methods})
    with store.open_writer(db) as con:
        roi_ids = store.upsert_rois(con, roi_specs(tuple(names)))
        store.register_new_cases(con, frame.rename(columns={"image": "image_path", "label": "label_path"}))
        for name, run_id in summary.run_ids.items():
            store.ensure_run(con, run_id, name, {"evaluation": settings, "model": model.provenance()},
                             model.checkpoint_sha256, names,
                             source="evaluate", description="attribution-method evaluation")
        for row in tqdm(frame.to_dict("records"), desc="evaluate methods", unit="case", disable=not progress):
            _evaluate_one(con, model, row, methods, class_ids, config, summary,
                          {c: roi_ids[names[c]] for c in class_ids})
    return summary


def _evaluate_one(con, model: Segmenter, row: dict, methods: list[str], classes: list[int],
                  config: EvaluationConfig, summary: EvaluationSummary, target_ids: dict[int, int]) -> None:
    case_id = str(row["case_id"])
    try:
        case = load_case(row, model.preprocessing, n_labels=model.n_classes)
        scores, curves = evaluate_case(model, case.image, {m: {} for m in methods}, classes, config)
        store.write_method_eval(con, summary.run_ids, case_id, scores, curves, target_ids)
        summary.done.append(case_id)
    except Exception as err:  # noqa: BLE001 - one bad case must not stop the cohort
        summary.failed.append(case_id)
        for run_id in summary.run_ids.values():
            store.record_failure(con, run_id, case_id, "evaluate", f"{type(err).__name__}: {err}")
        tqdm.write(f"evaluate: {case_id}: failed: {type(err).__name__}: {err}")


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
