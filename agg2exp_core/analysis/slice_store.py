"""The failure-slice search on a store: its inputs, the "why" of each slice, and its tables.

``find_failure_slices(source, run_id, config)`` is the core API (the planted benchmark calls it):
``source`` is a store connection (the run's cases, metadata, Dice and masses are read) or a ready
``SliceInputs``; it returns a ``SliceResult`` and writes nothing. ``analyze_slices`` runs it and
replaces the run's ``failure_slice``, ``failure_slice_member`` and ``failure_slice_cell`` rows in
one transaction (the ``analyze --slices`` step).

Why a slice fails: the matrix cells of its class (all cells for AVERAGE_TARGET) compared between the
slice and the rest by ``analysis.compare.permutation_test`` (Welch's t, permutations enough for a
cell to pass BH over the cells, sequential stopping), on the comparison mass kind (the lift); the
``top_cells`` cells with the smallest p are kept. The members' outlier reasons are read beside them
(``store.queries.slices.failure_slice_reasons``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from agg2exp_core import store
from agg2exp_core.analysis.compare import DEFAULT_STOP_AT, permutation_test, permutations_for_fdr
from agg2exp_core.analysis.masses import check_kind, comparison_cube
from agg2exp_core.analysis.slices import SliceConfig, SliceInputs, SliceResult, class_outcome, empty_cells, search
from agg2exp_core.errors import InputError
from agg2exp_core.store.queries import case_fields
from agg2exp_core.store.queries.slices import expected_dice_table, slice_case_metadata
from agg2exp_core.vocabulary import AVERAGE_TARGET

BASE_FIELDS = ["dataset", "split", "sex", "age", "pathologies"]


def slice_inputs(con, run_id: str, config: SliceConfig = SliceConfig()) -> SliceInputs:
    """The run's cases with their metadata (cases table and every case_field), true and expected Dice
    per class, and the comparison-kind masses."""
    check_kind(config.kind, "--mass-kind")
    if not store.run_exists(con, run_id):
        raise InputError(run_id, "no such run in the store")
    _, case_ids, targets, sources, cube = comparison_cube(con, run_id, config.kind)
    if not case_ids:
        raise InputError(run_id, "the run has no local importance rows")
    names = store.roi_names(con)
    classes = [t for t in targets if names.get(t) != "background"]
    metadata = slice_case_metadata(con, case_ids)[BASE_FIELDS]
    extra = case_fields(con, case_ids).drop(columns="case_id")
    extra = extra[[c for c in extra.columns if c not in BASE_FIELDS]]
    metadata = pd.concat([metadata.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    true = _true_dice(con, run_id, case_ids, classes, [r for r, n in names.items() if n == "background"])
    true = true.reindex(index=case_ids)
    expected = (expected_dice_table(con, run_id).pivot_table(index="case_id", columns="class_id", values="estimate")
                .reindex(index=case_ids))
    expected = expected[[c for c in expected.columns if c in classes or c == AVERAGE_TARGET]]
    keep = _searched(metadata, config.exclude_split)
    return SliceInputs([c for c, k in zip(case_ids, keep) if k], metadata[keep].reset_index(drop=True),
                       true[keep].reset_index(drop=True), expected[keep].reset_index(drop=True),
                       cube[keep], list(targets), list(sources), names)


def _searched(metadata: pd.DataFrame, exclude_split: str | None) -> np.ndarray:
    """Which cases the search sees: all but the ``exclude_split`` ones, unless that leaves none."""
    excluded = (metadata["split"] == exclude_split).to_numpy(bool) if exclude_split else np.zeros(len(metadata), bool)
    return ~excluded if not excluded.all() else np.ones(len(metadata), bool)


def _true_dice(con, run_id: str, case_ids: list[str], classes: list[int], background: list[int]) -> pd.DataFrame:
    """True Dice per explained class, and AVERAGE_TARGET: the mean over every non-background class of the
    model (as ``queries.failure_slice_dice`` reads it back, also for a run that explains only some classes)."""
    model = store.run_model(con, run_id)
    frame = store.dice_of_model(con, model) if model else pd.DataFrame(columns=["case_id", "target_id", "dice"])
    wide = frame.pivot_table(index="case_id", columns="target_id", values="dice").reindex(index=case_ids)
    average = wide[[c for c in wide.columns if c not in background]].mean(axis=1, skipna=True)
    wide = wide[[c for c in wide.columns if c in classes]]
    if len(wide.columns):
        wide[AVERAGE_TARGET] = average
    return wide


def slice_cells(inputs: SliceInputs, result: SliceResult, config: SliceConfig) -> pd.DataFrame:
    """The ``top_cells`` cells per slice that differ most between the slice and the rest (module docstring)."""
    if inputs.lift is None or result.slices.empty:
        return empty_cells()
    position = {c: i for i, c in enumerate(inputs.case_ids)}
    frames = []
    for row in result.slices.itertuples():
        known = np.isfinite(class_outcome(inputs, row.class_id, config)[0])
        inside = np.zeros(len(inputs.case_ids), dtype=bool)
        inside[[position[c] for c in result.members.case_id[result.members.slice_id == row.slice_id]]] = True
        frames.append(_cells_of(inputs, row.slice_id, row.class_id, inside, known & ~inside, config))
    return pd.concat(frames, ignore_index=True) if frames else empty_cells()


def _cells_of(inputs: SliceInputs, slice_id: int, class_id: int, inside: np.ndarray, rest: np.ndarray,
              config: SliceConfig) -> pd.DataFrame:
    targets = inputs.targets if class_id == AVERAGE_TARGET else [class_id]
    rows = inputs.lift[:, [inputs.targets.index(t) for t in targets], :]          # [cases, targets, sources]
    test = permutation_test(rows[inside], rows[rest], n_permutations=permutations_for_fdr(rows[0].size),
                            seed=config.seed, stop_at=DEFAULT_STOP_AT)
    t_idx, s_idx = np.meshgrid(np.arange(len(targets)), np.arange(len(inputs.sources)), indexing="ij")
    cells = pd.DataFrame({"slice_id": slice_id, "target_id": np.asarray(targets)[t_idx.ravel()],
                          "source_id": np.asarray(inputs.sources)[s_idx.ravel()], "mean_in": test.mean_a.ravel(),
                          "mean_out": test.mean_b.ravel(), "difference": test.difference.ravel(),
                          "p_value": test.p_values.ravel(), "q_value": test.q_values.ravel()})
    cells = cells.dropna(subset=["p_value"]).assign(size=lambda f: -f.difference.abs())
    return cells.sort_values(["p_value", "size"]).head(config.top_cells).drop(columns="size")


def find_failure_slices(source, run_id: str | None = None, config: SliceConfig = SliceConfig()) -> SliceResult:
    """The failure slices of a run (``source``: store connection) or of ready inputs (``SliceInputs``)."""
    if isinstance(source, SliceInputs):
        inputs = source
    else:
        if run_id is None:
            raise InputError("--run", "a run id is needed to search a store")
        inputs = slice_inputs(source, run_id, config)
    result = search(inputs, config)
    result.cells = slice_cells(inputs, result, config)
    return result


def write_slices(con, run_id: str, result: SliceResult) -> None:
    """Replace the run's failure_slice, failure_slice_member and failure_slice_cell rows (one transaction)."""
    slices = result.slices.assign(run_id=run_id)
    frames = {
        "failure_slice": slices[["run_id", "slice_id", "class_id", "source", "description", "members", "n", "effect",
                                 "p_value", "q_value", "uses_labels", "rank"]],
        "failure_slice_member": result.members.assign(run_id=run_id)[["run_id", "slice_id", "case_id"]],
        "failure_slice_cell": result.cells.assign(run_id=run_id)[["run_id", "slice_id", "target_id", "source_id",
                                                                  "mean_in", "mean_out", "difference", "p_value",
                                                                  "q_value"]],
    }
    store.replace_analysis(con, run_id, frames)


def analyze_slices(con, run_id: str, config: SliceConfig = SliceConfig()) -> SliceResult:
    """Search and write (the ``analyze --slices`` step)."""
    result = find_failure_slices(con, run_id, config)
    write_slices(con, run_id, result)
    return result
