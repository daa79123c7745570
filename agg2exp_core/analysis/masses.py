"""Which mass kind a comparison between cases or cohorts reads (volume-adjusted by default).

The raw mass of region b is, for any diffuse map, about b's share of the volume: two pure-noise
maps "agree", and a change of field of view reads as explanation drift. Comparisons therefore read
the lift (``vocabulary.COMPARISON_KIND``) and fall back to the raw absolute mass only where a run
has no volumes (an import without the published means, a store written before the lift existed),
saying so in the kind they return.
"""
from __future__ import annotations

import numpy as np

from agg2exp_core import store
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import MASS_KINDS

RAW_KIND = "abs"


def check_kind(kind: str, option: str = "--mass-kind") -> str:
    if kind not in MASS_KINDS:
        raise InputError(option, f"unknown mass kind {kind!r} (choose from {', '.join(MASS_KINDS)})")
    return kind


def comparison_cube(con, run_id: str, kind: str) -> tuple[str, list[str], list[int], list[int], np.ndarray]:
    """(kind read, case ids, target ids, source ids, cube ``[cases, targets, sources]``) of a run.

    ``kind`` = "lift" on a run without volumes reads the raw absolute mass instead (returned kind "abs").
    """
    check_kind(kind)
    cases, targets, sources, cube = store.local_matrices(con, run_id, kind)
    if kind != RAW_KIND and cases and not np.isfinite(cube).any():
        cases, targets, sources, cube = store.local_matrices(con, run_id, RAW_KIND)
        kind = RAW_KIND
    return kind, cases, targets, sources, cube
