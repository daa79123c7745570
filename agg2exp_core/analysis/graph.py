"""The knowledge graph of a global matrix (Fig. 4 of the Agg2Exp paper): edges b -> a.

The global matrix is a complete directed graph (every source RoI b feeds every target
class a with mass e_{b->a}); the paper draws "about one-third of the most important
edges", the top 3 sources of every target. ``top_k_edges`` keeps, per target, the ``k``
largest sources whose mass reaches ``min_mass``, optionally only as many as are needed
to cover ``cumulative`` of the target's mass outside itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

EDGE_COLUMNS = ["source_id", "target_id", "mass", "rank"]


@dataclass(frozen=True)
class GraphConfig:
    """Which edges of the complete graph are kept."""

    k: int = 3                      # sources per target (the paper: top 3)
    min_mass: float = 0.0           # drop edges below this mass
    cumulative: float | None = None  # keep sources until this share of the non-self mass is covered
    include_self: bool = False      # e_{a->a} is drawn as the node size, not as a loop
    exclude: tuple[int, ...] = ()   # RoI ids left out as sources and targets (e.g. background)

    def __post_init__(self):
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        if self.min_mass < 0:
            raise ValueError(f"min_mass must be >= 0, got {self.min_mass}")
        if self.cumulative is not None and not 0 < self.cumulative <= 1:
            raise ValueError(f"cumulative must lie in (0, 1], got {self.cumulative}")


def top_k_edges(matrix: np.ndarray, target_ids: Sequence[int], source_ids: Sequence[int],
                config: GraphConfig = GraphConfig()) -> pd.DataFrame:
    """Kept edges: ``source_id, target_id, mass, rank`` (rank 1 = the target's largest source).

    ``matrix`` is ``[targets, sources]`` (rows ``target_ids``, columns ``source_ids``). Ties
    are broken by the smaller source id, so the result is deterministic. NaN, zero and
    negative masses are never edges.
    """
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(target_ids), len(source_ids)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(target_ids)} targets x "
                         f"{len(source_ids)} sources")
    excluded = {int(i) for i in config.exclude}
    rows = []
    for i, target in enumerate(int(t) for t in target_ids):
        if target in excluded:
            continue
        candidates = [(float(matrix[i, j]), int(source)) for j, source in enumerate(source_ids)
                      if np.isfinite(matrix[i, j]) and matrix[i, j] > 0 and int(source) not in excluded
                      and (config.include_self or int(source) != target)]
        candidates.sort(key=lambda pair: (-pair[0], pair[1]))
        total = sum(mass for mass, _ in candidates)
        covered = 0.0
        for rank, (mass, source) in enumerate(candidates[:config.k], start=1):
            if mass < config.min_mass:
                break
            if config.cumulative is not None and total > 0 and covered >= config.cumulative * total:
                break
            rows.append([source, target, mass, rank])
            covered += mass
    return pd.DataFrame(rows, columns=EDGE_COLUMNS).astype({"source_id": int, "target_id": int, "rank": int})


def self_mass(matrix: np.ndarray, target_ids: Sequence[int], source_ids: Sequence[int]) -> dict[int, float]:
    """``e_{a->a}`` of every target that is also a source (the node sizes of the graph)."""
    column = {int(s): j for j, s in enumerate(source_ids)}
    matrix = np.asarray(matrix, dtype=float)
    return {int(t): float(matrix[i, column[int(t)]]) for i, t in enumerate(target_ids)
            if int(t) in column and np.isfinite(matrix[i, column[int(t)]])}
