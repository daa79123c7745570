"""The value objects the heat maps draw (no Streamlit, no store): an ordered matrix with its RoIs,
its cells' intervals, a signed effect matrix. Views build them, figures draw them, the report
tabulates them, so all three read the same cells in the same order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from agg2exp_core.analysis.ordering import ClusterOrder
from dashboard.analytics import Roi


@dataclass(frozen=True)
class MatrixView:
    """An ordered target x source matrix with its RoIs, per-cell case counts and dendrograms."""

    targets: list[Roi]
    sources: list[Roi]
    matrix: np.ndarray
    counts: np.ndarray
    row_tree: ClusterOrder | None = None
    column_tree: ClusterOrder | None = None

    @property
    def is_empty(self) -> bool:
        return self.matrix.size == 0 or not np.isfinite(self.matrix).any()

    @property
    def has_trees(self) -> bool:
        return self.row_tree is not None and self.column_tree is not None and bool(self.row_tree.icoord)

    def long_table(self, value_label: str) -> pd.DataFrame:
        """The matrix as rows (target, source, value, n) for CSV export."""
        rows = [{"target": t.name, "source": s.name, value_label: self.matrix[i, j], "n_cases": int(self.counts[i, j])}
                for i, t in enumerate(self.targets) for j, s in enumerate(self.sources)]
        return pd.DataFrame(rows)

    def wide_table(self, corner: str = "target a \\ source b") -> pd.DataFrame:
        """The matrix as one row per target, one column per source (the report's values page)."""
        wide = pd.DataFrame(self.matrix, columns=[s.name for s in self.sources])
        wide.insert(0, corner, [t.name for t in self.targets])
        return wide


@dataclass(frozen=True)
class CellIntervals:
    """Interval bounds per cell of a ``MatrixView`` (same order) and how they were obtained."""

    low: np.ndarray
    high: np.ndarray
    how: str

    def bounds(self, i: int, j: int) -> tuple[float, float]:
        return float(self.low[i, j]), float(self.high[i, j])


@dataclass(frozen=True)
class SignedMatrix:
    """A signed effect matrix (e.g. ATE) with its standard errors and counts; columns are RoIs or
    plain names (network components)."""

    targets: Sequence
    sources: Sequence
    value: np.ndarray
    se: np.ndarray
    counts: np.ndarray | None


@dataclass(frozen=True)
class SignedLabels:
    """What a signed matrix's numbers are called on its colour bar, hover and axis."""

    value: str = "ATE"
    se: str = "SE"
    count: str = "n"
    column_title: str = "source region b"
