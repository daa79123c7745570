"""The model's own uncertainty per case and class in the pipeline (``models.uncertainty``).

``precompute`` computes the features of a case beside its explanation, from the clean prediction
it already has, and writes them in the case's transaction; they are keyed by the model, so a second
run of the same model (another method) reuses them (``jobs_needing``). ``compute_uncertainty`` does
the same for a store whose cases are already done (a backfill): one transaction per case, resumable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from agg2exp_core import store
from agg2exp_core.errors import InputError
from agg2exp_core.io.headers import check_case_headers
from agg2exp_core.io.images import Case, load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.labels import roi_specs
from agg2exp_core.models import Segmenter, load_model
from agg2exp_core.models.sources import ModelSpec
from agg2exp_core.models.uncertainty import TTASpec, uncertainty_features
from agg2exp_core.store.queries.uncertainty import cases_with_uncertainty
from agg2exp_core.store.uncertainty import write_uncertainty

Features = dict[str, np.ndarray]  # feature name -> [n_classes] values


def case_features(model: Segmenter, case: Case, clean_logits: torch.Tensor, spec: TTASpec | None) -> Features | None:
    """The case's features from its clean logits; None when ``spec`` is None (rows already stored)."""
    if spec is None:
        return None
    return uncertainty_features(model, case.image, clean_logits, case.spacing, spec)


def feature_rows(model_sha256: str, case_id: str, features: Features, class_roi_ids: Sequence[int]) -> list[list]:
    """``case_uncertainty`` rows; undefined values (NaN) are left out, as ``dice`` leaves out absent classes."""
    return [[model_sha256, case_id, int(class_roi_ids[c]), name, float(v)]
            for name, values in features.items() for c, v in enumerate(values) if np.isfinite(v)]


def cases_needing(con, model_sha256: str, case_ids: Sequence[str], recomputed: Sequence[str] = ()) -> set[str]:
    """Cases to compute features for: those without rows for this model, and those whose inputs changed."""
    return (set(case_ids) - cases_with_uncertainty(con, model_sha256)) | set(recomputed)


@dataclass
class UncertaintySummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def line(self) -> str:
        mean = f", {np.mean(self.seconds):.1f} s/case" if self.seconds else ""
        return (f"uncertainty: {len(self.done)} computed, {len(self.skipped)} already done, "
                f"{len(self.failed)} failed{mean}")


def compute_uncertainty(manifest: str | Path, model: str | Path | ModelSpec | Segmenter, db: str | Path,
                        spec: TTASpec | None = None, device: str = "auto", case_ids: Sequence[str] | None = None,
                        progress: bool = True, cohort_root: str | Path | None = None,
                        allow_outside_root: bool = False) -> UncertaintySummary:
    """Features of every manifest case the store lacks for this model (each case its own transaction).

    Bad input (manifest, model, case ids) is an ``InputError`` before anything is written; a case that
    fails is reported in one line and left out, the others go on.
    """
    cohort = read_manifest(manifest, cohort_root, allow_outside_root)
    if case_ids is not None:
        unknown = sorted(set(case_ids) - set(cohort.case_id))
        if unknown:
            raise InputError("--cases", f"case id(s) not in the manifest: {', '.join(map(repr, unknown[:5]))}")
        cohort = cohort[cohort.case_id.isin(list(case_ids))]
    model = load_model(model, device=device)
    with store.open_writer(db) as con:
        return fill_missing(con, model, cohort.to_dict("records"), spec, progress)


def fill_missing(con, model: Segmenter, rows: Sequence[dict], spec: TTASpec | None = None,
                 progress: bool = True) -> UncertaintySummary:
    """Compute and write, in this process, the features of the ``rows`` (manifest rows) the store lacks for
    this model; also how ``precompute`` fills cases it skips as done but that predate the features."""
    spec, summary = spec or TTASpec(), UncertaintySummary()
    roi_ids = store.upsert_rois(con, roi_specs(model.label_names, []))
    class_roi_ids = [roi_ids[n] for n in model.label_names]
    todo = cases_needing(con, model.checkpoint_sha256, [str(r["case_id"]) for r in rows])
    summary.skipped = sorted({str(r["case_id"]) for r in rows} - todo)
    for row in tqdm([r for r in rows if str(r["case_id"]) in todo], desc="uncertainty", disable=not progress):
        _one_case(con, model, row, spec, class_roi_ids, summary)
    return summary


def _one_case(con, model: Segmenter, row: dict, spec: TTASpec, class_roi_ids: list[int],
              summary: UncertaintySummary) -> None:
    case_id, started = str(row["case_id"]), time.time()
    try:
        check_case_headers(row, model.preprocessing.target_spacing)
        case = load_case(row, model.preprocessing, n_labels=model.n_classes)
        features = case_features(model, case, model.predict(case.image), spec)
        write_uncertainty(con, model.checkpoint_sha256, case_id,
                          feature_rows(model.checkpoint_sha256, case_id, features, class_roi_ids))
    except Exception as err:  # noqa: BLE001 - one case's failure is reported, the rest go on
        summary.failed.append(case_id)
        tqdm.write(f"failed {case_id} (uncertainty): {' '.join(str(err).split())}")
        return
    summary.done.append(case_id)
    summary.seconds.append(time.time() - started)
