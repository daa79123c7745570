"""``agg2exp sanity``: the sanity checks of a stored run, for its method and model, on a few of its cases.

The run names its method, parameters and model checksum; the model file and the manifest are given again
(the store keeps neither path) and the model must be the run's (same SHA-256). Every case is computed
before anything is written; the run's ``sanity_check`` rows are then replaced in one transaction, so a
failure leaves the store as it was.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from agg2exp_core import store
from agg2exp_core.analysis.sanity import COLUMNS, SanityConfig, run_sanity_checks
from agg2exp_core.attribution.registry import get_method
from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.models import Segmenter
from agg2exp_core.models.sources import ModelSpec, load_model
from agg2exp_core.store.queries import runs, sanity_runs

DEFAULT_CASES = 1  # the run's first case: the cascade costs (steps + 2) explanations of the classes


@dataclass
class SanitySummary:
    run_id: str
    method: str
    cases: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    n_layers: int = 0
    trained_seconds: float = 0.0   # one explanation of the classes by the trained model (all cases)
    seconds: float = 0.0           # everything

    @property
    def cost_ratio(self) -> float:
        return self.seconds / self.trained_seconds if self.trained_seconds else float("nan")

    def verdicts(self) -> pd.DataFrame:
        """Per class: passed the cascading randomisation (at the fully randomised step, every case)."""
        mprt = self.frame[(self.frame.check == "mprt") & (self.frame.metric == "spearman_abs")]
        final = mprt[mprt.step == mprt.step.max()]
        return final.groupby("class_id").passed.agg(lambda p: bool(p.notna().all() and p.all()))

    def line(self) -> str:
        verdicts = self.verdicts()
        return (f"run {self.run_id} ({self.method}): sanity checks on {len(self.cases)} case(s), "
                f"{self.n_layers} layers; {int(verdicts.sum())} of {len(verdicts)} classes pass the randomisation "
                f"check (Spearman |a|); {self.seconds:.1f} s, {self.cost_ratio:.1f}x one explanation")


def _run_record(db: Path, run_id: str) -> tuple[pd.Series, dict[str, int], tuple[str, ...]]:
    with store.connect(db, read_only=True) as con:
        frame = runs(con)
        roi_ids = {name: int(i) for i, name in store.roi_names(con).items()}
        cases = tuple(sorted(store.done_cases(con, run_id)))
    match = frame[frame.run_id == run_id]
    if not len(match):
        raise InputError("--run", f"no run {run_id!r} in {db}")
    run = match.iloc[0]
    if run.source != "precompute":
        raise InputError("--run", f"run {run_id} was not computed here ({run.source}): no model to randomise")
    return run, roi_ids, cases


def _method_params(method: str, params: dict) -> dict:
    """The run's explain parameters (precompute-level keys and the model's provenance dropped)."""
    if method == "causal" and params.get("donor") == "images":
        raise InputError("--run", "causal runs with cohort donors are not supported by the sanity checks")
    return {k: v for k, v in params.items() if k in get_method(method).parameters and k not in ("out", "mask")}


def _classes(given: Sequence[int] | None, params: dict, n_classes: int) -> list[int]:
    classes = list(given) if given else [int(c) for c in params.get("classes") or range(n_classes)]
    bad = [c for c in classes if not 0 <= c < n_classes]
    if bad:
        raise InputError("--classes", f"class id(s) {bad} outside the model's 0..{n_classes - 1}")
    return classes


def _case_rows(manifest: Path, cohort_root, allow_outside_root, wanted: Sequence[str] | None,
               done: tuple[str, ...]) -> list[dict]:
    frame = read_manifest(manifest, cohort_root, allow_outside_root)
    frame = frame.assign(case_id=frame.case_id.astype(str)).set_index("case_id", drop=False)
    if wanted:
        missing = [c for c in wanted if c not in frame.index]
        if missing:
            raise InputError("--cases", f"not in {manifest}: {', '.join(missing)}")
        chosen = list(wanted)
    else:
        chosen = [c for c in done if c in frame.index][:DEFAULT_CASES]
        if not chosen:
            raise InputError("--cases", f"none of the run's cases is in {manifest}")
    return [frame.loc[c].to_dict() for c in chosen]


def sanity_run(db: str | Path, run_id: str, manifest: str | Path, model: str | Path | ModelSpec | Segmenter,
               classes: Sequence[int] | None = None, cases: Sequence[str] | None = None,
               config: SanityConfig = SanityConfig(), device="auto", cohort_root=None,
               allow_outside_root: bool = False) -> SanitySummary:
    """Compute and store the sanity checks of run ``run_id`` (its rows of ``sanity_check`` replaced)."""
    started = time.perf_counter()
    db, manifest = Path(db), Path(manifest)
    if not db.exists():
        raise InputError(db, "no such store")
    run, roi_ids, done = _run_record(db, run_id)
    params = run.params if isinstance(run.params, dict) else json.loads(run.params or "{}")
    method_params = _method_params(run.method, params)
    model = model if isinstance(model, Segmenter) else load_model(model, device=device)
    if model.checkpoint_sha256 != run.model_sha256:
        raise InputError("--model", f"is not the model of run {run_id} (SHA-256 {model.checkpoint_sha256[:12]}…, "
                                    f"the run's {str(run.model_sha256)[:12]}…)")
    class_ids = _classes(classes, params, model.n_classes)
    summary = SanitySummary(run_id, run.method)
    frames = []
    for row in _case_rows(manifest, cohort_root, allow_outside_root, cases, done):
        case = load_case(row, model.preprocessing, n_labels=model.n_classes)
        extra = {"spacing": case.spacing} if run.method == "kernelshap" else {}
        pred = model.predict(case.image).argmax(0)
        frame = run_sanity_checks(model, case.image, class_ids, run.method, {**extra, **method_params}, config,
                                  rois=case.rois, case_id=str(row["case_id"]), mask=pred)
        summary.cases.append(str(row["case_id"]))
        summary.trained_seconds += frame.attrs["seconds"]["trained"]
        summary.n_layers = len(frame.attrs["layers"])
        frames.append(frame)
    summary.frame = pd.concat(frames, ignore_index=True)
    _write(db, run_id, summary.frame, model.label_names, roi_ids)
    summary.seconds = time.perf_counter() - started
    return summary


def _write(db: Path, run_id: str, frame: pd.DataFrame, label_names: Sequence[str], roi_ids: dict[str, int]) -> None:
    """The run's rows, class channels mapped to the store's RoI ids, in one transaction."""
    rows = frame.assign(run_id=run_id, class_id=[roi_ids[label_names[c]] for c in frame.class_id])
    with store.open_writer(db) as con:
        store.replace_table_rows(con, "sanity_check", run_id, rows[["run_id"] + COLUMNS])


# The demo's sanity checks (the Methods page's curves): one reference test case, three classes; VG with two
# cascading depths, SmoothGrad (n = 4: four times VG's cost per map) with one. Measured in notes/sanity.md.
DEMO_CASES = ("ref-000",)
DEMO_CLASSES = ("aorta", "heart", "lung_lower_lobe_left")
DEMO_STEPS = {"vg": 2, "smoothgrad": 1}


def demo_sanity_checks(db: Path, manifest: Path, checkpoint: Path, run_ids: dict[str, str]) -> dict[str, str]:
    """The sanity checks of the demo's runs (method -> run id) that have none yet; their summary lines."""
    with store.connect(db, read_only=True) as con:
        done = set(sanity_runs(con))
    model = load_model(checkpoint, device="cpu")
    classes = [model.label_names.index(name) for name in DEMO_CLASSES if name in model.label_names]
    lines = {}
    for method, run_id in run_ids.items():
        if run_id in done or method not in DEMO_STEPS:
            continue
        summary = sanity_run(db, run_id, manifest, model, classes, DEMO_CASES, SanityConfig(steps=DEMO_STEPS[method]))
        lines[method] = summary.line()
    return lines
