"""The criteria of the planted known answer (issue #25 b), each measured, none assumed.

1. Comparison: on the marked cases, the marker RoI's mass for the effusion class is larger with
   the shortcut network than with the control (``compare.permutation_test``, Welch's t with BH
   over every cell of the matrix); and on each marked case the marker ranks first among the
   sources for KernelSHAP and the causal method (``marker_ranks``).
2. Drift: marked against unmarked cases (``drift.drift_analysis``, reference ``unmarked``) is
   detected for the effusion class with the shortcut network (q < alpha) and not with the control.

Regions for criterion 1's ranking: KernelSHAP and the causal method explain one unit per source
region, the network's predicted classes plus the marker box cut out of what it predicts there, so
a unit's value is the region's own Shapley value (or effect). Its voxel map spreads that value over
the unit's voxels, so the region's lift (mass per unit of volume, ``aggregate.roi_importance``
over its volume share) is proportional to |value|: the ranking by lift is the ranking by |value|,
where the raw mass would favour the large regions whatever their value.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from agg2exp_core import store
from agg2exp_core.aggregate import roi_importance
from agg2exp_core.analysis.compare import permutation_test
from agg2exp_core.attribution import explain
from agg2exp_core.attribution.partitions import relabel
from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_case

EFFUSION = "pleural_effusion"
MARKER = "marker"
ALPHA = 0.05


def _roi_id(con, name: str) -> int:
    ids = {n: i for i, n in store.roi_names(con).items()}
    if name not in ids:
        raise InputError(name, "no such region in the store")
    return ids[name]


def _cases_of(con, run_id: str, dataset: str) -> list[str]:
    cases = store.local_matrices(con, run_id)[0]
    meta = store.case_metadata(con, cases)
    return sorted(meta.case_id[meta.dataset.astype(str) == dataset].tolist())


def _aligned_cube(con, run_id: str, cases: list[str], targets: list[int], sources: list[int]) -> np.ndarray:
    """``[cases, targets, sources]`` raw absolute masses in a fixed order of ids (NaN where absent)."""
    got_cases, got_targets, got_sources, cube = store.local_matrices(con, run_id, "abs", cases)
    out = np.full((len(cases), len(targets), len(sources)), np.nan)
    ci = [got_cases.index(c) for c in cases]
    for ti, t in enumerate(targets):
        for si, s in enumerate(sources):
            if t in got_targets and s in got_sources:
                out[:, ti, si] = cube[ci, got_targets.index(t), got_sources.index(s)]
    return out


def marker_comparison(con, shortcut_run: str, control_run: str, dataset: str = "marked",
                      n_permutations: int = 2000, seed: int = 0) -> dict:
    """Criterion 1 (comparison): the effusion-from-marker cell, shortcut vs control, on ``dataset``."""
    cases = _cases_of(con, shortcut_run, dataset)
    targets = sorted(set(store.local_matrices(con, shortcut_run, "abs", cases)[1]) |
                     set(store.local_matrices(con, control_run, "abs", cases)[1]))
    sources = sorted(store.roi_names(con))
    a = _aligned_cube(con, shortcut_run, cases, targets, sources)
    b = _aligned_cube(con, control_run, cases, targets, sources)
    result = permutation_test(a, b, n_permutations=n_permutations, seed=seed, alpha=ALPHA, fdr=True)
    t, s = targets.index(_roi_id(con, EFFUSION)), sources.index(_roi_id(con, MARKER))
    n_cells = int(np.isfinite(result.p_values).sum())
    return {"n_cases": len(cases), "mean_shortcut": float(result.mean_a[t, s]), "mean_control": float(result.mean_b[t, s]),
            "difference": float(result.difference[t, s]), "p_value": float(result.p_values[t, s]),
            "q_value": float(result.q_values[t, s]), "n_cells": n_cells,
            "met": bool(result.significant[t, s] and result.difference[t, s] > 0)}


def effusion_drift(con, drift) -> dict:
    """Criterion 2 for one model: the effusion class's drift test (``drift.DriftResult``)."""
    tests = drift.tests[drift.tests.target_id == _roi_id(con, EFFUSION)]
    if tests.empty:
        return {"statistic": float("nan"), "p_value": float("nan"), "q_value": float("nan"), "n_ref": 0, "n_new": 0,
                "detected": False}
    row = tests.iloc[0]
    q = float(row.q_value)
    return {"statistic": float(row.statistic), "p_value": float(row.p_value), "q_value": q,
            "n_ref": int(row.n_ref), "n_new": int(row.n_new), "detected": bool(np.isfinite(q) and q < ALPHA)}


def source_units(predicted: np.ndarray, marker: np.ndarray, names) -> tuple[np.ndarray, list[str]]:
    """One unit per predicted class and one for the marker box (cut out of the class it lies in)."""
    regions = np.where(marker, len(names), predicted)
    units, values = relabel(regions)
    return units, [names[v] if v < len(names) else MARKER for v in values]


def region_lift(model, image, units: np.ndarray, method: str, target: int, seed: int = 0) -> np.ndarray:
    """Lift of every unit for class ``target`` (``[M]``): mass over volume share, ∝ |unit value|."""
    params = {"partition": units, "seed": seed}
    if method == "kernelshap":
        params["n_coalitions"] = 2 ** int(units.max() + 1)     # exact Shapley values (few regions)
    attributions = explain(model, image, method, classes=[target], **params)
    mass = roi_importance(attributions, units, kind="abs")[0]
    share = np.bincount(units.ravel(), minlength=len(mass)) / units.size
    return mass / share


def marker_ranks(model, rows: list[dict], method: str, seed: int = 0) -> dict:
    """Per marked case, the marker's rank (1 = first) among the sources for the effusion class."""
    names = list(model.label_names)
    target = names.index(EFFUSION)
    ranks, leaders = [], []
    for row in rows:
        case = load_case(row, model.preprocessing, n_labels=model.n_classes)
        if MARKER not in case.rois:
            raise InputError(row.get("case_id", "case"), f"no 'roi:{MARKER}' mask")
        predicted = model.predict(case.image).argmax(0).numpy()
        units, unit_names = source_units(predicted, case.rois[MARKER].astype(bool), names)
        lift = region_lift(model, case.image, units, method, target, seed)
        order = np.argsort(-lift, kind="stable")
        ranks.append(int(np.flatnonzero(order == unit_names.index(MARKER))[0]) + 1)
        leaders.append(unit_names[order[0]])
    return {"ranks": ranks, "leaders": leaders, "n_first": int(sum(r == 1 for r in ranks)), "n_cases": len(rows),
            "met": bool(rows) and all(r == 1 for r in ranks)}


def sanity_summary(model, rows: list[dict], method: str = "vg", steps: int = 2, seed: int = 0) -> dict:
    """Criterion 3 for one model: the sanity checks (``analysis.sanity``) of the effusion class on ``rows``.

    Met when, on every case, every MPRT metric of the fully randomised model lies below its
    unrelated-class baseline and the edge control passes (the random-logit check is reported beside).
    """
    from agg2exp_core.analysis.sanity import SanityConfig, run_sanity_checks

    target = list(model.label_names).index(EFFUSION)
    frames = []
    for row in rows:
        case = load_case(row, model.preprocessing, n_labels=model.n_classes)
        frames.append(run_sanity_checks(model, case.image, [target], method, {}, SanityConfig(steps=steps, seed=seed),
                                        rois=case.rois, case_id=case.case_id))
    checks = pd.concat(frames, ignore_index=True)
    mprt = checks[checks.check == "mprt"]
    full = mprt[mprt.step == mprt.step.max()]
    metrics = {m: {"value": float(g.value.mean()), "baseline": float(g.baseline.mean()),
                   "passed": int((g.passed == True).sum()), "n": len(g)}      # noqa: E712 (None = undecided)
               for m, g in full.groupby("metric")}
    edge, logit = checks[checks.check == "edge"], checks[checks.check == "random_logit"]
    met = all(v["passed"] == v["n"] for v in metrics.values()) and bool((edge.passed == True).all())  # noqa: E712
    return {"full_randomisation": metrics, "edge_passed": int((edge.passed == True).sum()),  # noqa: E712
            "random_logit_passed": int((logit.passed == True).sum()), "n_logit": len(logit),  # noqa: E712
            "n_cases": len(rows), "met": met, "checks": checks}
