"""Test-retest of a run: its matrices recomputed with other SmoothGrad seeds, its forests with other seeds.

``retest`` writes ``retest_icc``: the ICC(2,1) (``analysis/retest.py``) of every matrix cell
across SmoothGrad seeds (the run's own seed, read back from the store, plus ``config.seeds``,
on ``config.max_cases`` of its cases: each costs one more explanation of the case per seed),
and of every class's anomaly score and every cell's outlier reason across Isolation-Forest
seeds (no model needed). The run's stored matrices are the first repeat; the other seeds
are computed exactly as ``precompute`` computes a case (``process_case``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from agg2exp_core import store
from agg2exp_core.store import queries
from agg2exp_core.analysis import retest as icc
from agg2exp_core.attribution.registry import get_method
from agg2exp_core.errors import InputError
from agg2exp_core.io.images import load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.models import Segmenter
from agg2exp_core.models.sources import ModelSpec, load_model
from agg2exp_core.pipeline.precompute import process_case

RETEST_KINDS = ("abs", "lift")
# Methods whose maps depend on their seed (SmoothGrad's noise draws); the others take a seed parameter
# for a uniform signature but give the same map for every seed (a retest of them would only cost time).
SEEDED_METHODS = ("smoothgrad",)


@dataclass(frozen=True)
class RetestConfig:
    seeds: tuple[int, ...] = (1,)        # SmoothGrad seeds besides the run's own
    max_cases: int = 8                   # cases re-explained per seed (spread over the run's sorted ids)
    forest_seeds: int = 5                # Isolation-Forest seeds (0: no forest retest)

    def __post_init__(self):
        if self.max_cases < 2:
            raise InputError("--max-cases", f"an ICC needs at least 2 cases, got {self.max_cases}")
        if self.forest_seeds == 1 or self.forest_seeds < 0:
            raise InputError("--forest-seeds", f"must be 0 (none) or at least 2, got {self.forest_seeds}")


def retest(db: str | Path, run_id: str, config: RetestConfig = RetestConfig(), manifest: str | Path | None = None,
           model: str | Path | ModelSpec | Segmenter | None = None, analysed: bool = True) -> pd.DataFrame:
    """Compute and store (replacing the run's rows) the run's retest ICCs; returns them.

    SmoothGrad seeds need ``manifest`` and ``model`` and a SmoothGrad run; the forest
    seeds need the run's outlier analysis (``analysed``: it has one).
    """
    with store.open_writer(db) as con:
        method, params = _run_method(con, run_id)
        frames = []
        if manifest is not None and model is not None and method in SEEDED_METHODS and config.seeds:
            frames.append(seed_icc(con, run_id, method, params, manifest, model, config))
        if analysed and config.forest_seeds:
            frames.append(icc.forest_seed_icc(con, run_id, config.forest_seeds))
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=icc.COLUMNS)
        store.replace_analysis(con, run_id, {"retest_icc": table})
    return table


def seed_icc(con, run_id: str, method: str, params: dict, manifest, model, config: RetestConfig) -> pd.DataFrame:
    """ICC per cell across the run's SmoothGrad seed and ``config.seeds`` (kinds ``RETEST_KINDS``)."""
    segmenter = model if isinstance(model, Segmenter) else load_model(model)
    rows = _chosen_rows(con, run_id, manifest, config.max_cases)
    case_ids = [str(r["case_id"]) for r in rows]
    names = queries.roi_names(con)
    roi_ids = {name: roi_id for roi_id, name in names.items()}
    cubes = {kind: [queries.local_cube(con, run_id, case_ids, kind)] for kind in RETEST_KINDS}
    classes = [segmenter.label_names.index(names[t]) for t in cubes["abs"][0][1]]
    for seed in config.seeds:
        matrices = [_case_matrices(segmenter, row, method, {**params, "seed": int(seed)}, classes, roi_ids)
                    for row in rows]
        for kind in RETEST_KINDS:
            cubes[kind].append(_as_cube(matrices, kind, cubes[kind][0]))
    frames = []
    for kind, (first, *others) in cubes.items():
        _, targets, sources, base = first
        values = np.stack([base] + others, axis=1)     # [cases, repeats, targets, sources]
        frames.append(icc.cell_table(run_id, icc.SMOOTHGRAD_SEED, kind, values, targets, sources))
    return pd.concat(frames, ignore_index=True)


def _run_method(con, run_id: str) -> tuple[str, dict]:
    runs = queries.runs(con)
    row = runs[runs.run_id == run_id]
    if row.empty:
        raise InputError(run_id, "no such run in the store")
    params = row.params.iloc[0] or {}
    params = json.loads(params) if isinstance(params, str) else dict(params)
    kept = set(get_method(row.method.iloc[0]).parameters)
    return str(row.method.iloc[0]), {k: v for k, v in params.items() if k in kept}


def _chosen_rows(con, run_id: str, manifest, max_cases: int) -> list[dict]:
    """Up to ``max_cases`` manifest rows of the run's cases, evenly spread over their sorted ids."""
    done = sorted(queries.run_case_ids(con, run_id))
    rows = {str(r["case_id"]): r for r in read_manifest(manifest).to_dict("records")}
    present = [c for c in done if c in rows]
    if len(present) < 2:
        raise InputError(str(manifest), f"fewer than 2 of the run's cases are in the manifest ({len(present)})")
    picks = np.unique(np.linspace(0, len(present) - 1, min(max_cases, len(present))).round().astype(int))
    return [rows[present[i]] for i in picks]


def _case_matrices(model: Segmenter, row: dict, method: str, params: dict, classes: Sequence[int],
                   roi_ids: dict[str, int]) -> dict[tuple[int, int], dict[str, float]]:
    """``{(target_id, source_id): {kind: value}}`` of one case, as precompute stores them."""
    case = load_case(row, model.preprocessing, n_labels=model.n_classes)
    matrices = process_case(model, case, method, params, classes)[0]
    names = list(model.label_names) + list(case.rois)
    cells = {}
    for i, c in enumerate(classes):
        for j, name in enumerate(names):
            cells[(roi_ids[model.label_names[c]], roi_ids[name])] = {k: float(matrices[k][i, j]) for k in RETEST_KINDS}
    return cells


def _as_cube(matrices: list[dict], kind: str, like: tuple) -> np.ndarray:
    """The recomputed cells of ``kind`` laid out like the stored cube ``like`` (NaN where absent)."""
    _, targets, sources, base = like
    cube = np.full(base.shape, np.nan)
    for n, cells in enumerate(matrices):
        for (t, s), values in cells.items():
            if t in targets and s in sources:
                cube[n, targets.index(t), sources.index(s)] = values[kind]
    return cube
