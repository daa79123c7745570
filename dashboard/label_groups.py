"""Large label sets (TotalSegmentator: 117 classes) made readable: the heat map by anatomical group,
or zoomed to one group, and class pickers ordered and searchable by group. Pure: no Streamlit.

A row of the matrix is the distribution of one target class's attribution over the source RoIs,
so sources are **summed** within a group (the share of the attribution that lies in the group's
RoIs: mass is additive) and targets are **averaged** within a group (the group's typical class).
A grouped row therefore keeps the mean of its members' row sums.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from agg2exp_core.labels import GROUP_COLORS
from dashboard.analytics import Roi
from dashboard.matrices import MatrixView

LARGE_LABEL_SET = 30       # more classes than this: offer the group views and group-first pickers
ALL, GROUPS, GROUP_PREFIX = "all", "groups", "group:"


def groups_in_order(rois: Sequence[Roi]) -> list[str]:
    """The groups present, in the palette's order (cardiovascular, organ, bone, ...), unknown ones last."""
    known = [g for g in GROUP_COLORS if any(r.grp == g for r in rois)]
    return known + sorted({r.grp for r in rois} - set(known))


def zoom_options(rois: Sequence[Roi]) -> list[str]:
    """'all', 'groups', then 'group:<name>' for every group with at least one of ``rois``."""
    return [ALL, GROUPS] + [GROUP_PREFIX + g for g in groups_in_order(rois)]


def zoom_label(option: str) -> str:
    if option == ALL:
        return "every class"
    if option == GROUPS:
        return "anatomical groups (sources summed, targets averaged)"
    return f"only {option.removeprefix(GROUP_PREFIX)} (other groups summed)"


def _group_roi(group: str, members: int, k: int) -> Roi:
    return Roi(-1 - k, f"{group} ({members})", group, GROUP_COLORS.get(group, GROUP_COLORS["other"]), True)


def _sum_columns(matrix: np.ndarray, columns: list[int]) -> np.ndarray:
    """Sum over ``columns``, NaN where every one is NaN (no value, not a zero mass)."""
    part = matrix[:, columns]
    return np.where(np.isnan(part).all(axis=1), np.nan, np.nansum(part, axis=1))


def _mean_rows(matrix: np.ndarray, rows: list[int]) -> np.ndarray:
    part = matrix[rows]
    counted = (~np.isnan(part)).sum(axis=0)
    return np.where(counted > 0, np.nansum(part, axis=0) / np.maximum(counted, 1), np.nan)


def _column_blocks(sources: Sequence[Roi], zoom: str) -> list[tuple[Roi, list[int]]]:
    """(column RoI, source indices) of the zoomed view's columns."""
    blocks, groups = [], groups_in_order(sources)
    for k, group in enumerate(groups):
        members = [j for j, s in enumerate(sources) if s.grp == group]
        if zoom == GROUP_PREFIX + group:
            blocks += [(sources[j], [j]) for j in members]
        else:
            blocks.append((_group_roi(group, len(members), k), members))
    return blocks


def _row_blocks(targets: Sequence[Roi], zoom: str) -> list[tuple[Roi, list[int]]]:
    if zoom == GROUPS:
        return [(_group_roi(g, len(m), k), m) for k, g in enumerate(groups_in_order(targets))
                if (m := [i for i, t in enumerate(targets) if t.grp == g])]
    group = zoom.removeprefix(GROUP_PREFIX)
    return [(t, [i]) for i, t in enumerate(targets) if t.grp == group]


def zoom_view(view: MatrixView, zoom: str) -> MatrixView:
    """``view`` grouped by anatomical group, or zoomed to one group.

    ``all`` returns it unchanged. Dendrograms are dropped (they belong to the full order); a
    cell's count is the smallest count of the cells it combines.
    """
    if zoom == ALL:
        return view
    if zoom != GROUPS and zoom.removeprefix(GROUP_PREFIX) not in groups_in_order(view.targets):
        raise ValueError(f"no such class group: {zoom!r}")
    matrix, counts = np.asarray(view.matrix, dtype=float), np.asarray(view.counts, dtype=float)
    rows, columns = _row_blocks(view.targets, zoom), _column_blocks(view.sources, zoom)
    by_column = np.column_stack([_sum_columns(matrix, cols) for _, cols in columns])
    count_columns = np.column_stack([counts[:, cols].min(axis=1) for _, cols in columns])
    grouped = np.vstack([_mean_rows(by_column, members) for _, members in rows])
    grouped_counts = np.vstack([count_columns[members].min(axis=0) for _, members in rows])
    return replace(view, targets=[roi for roi, _ in rows], sources=[roi for roi, _ in columns], matrix=grouped,
                   counts=grouped_counts.astype(int), row_tree=None, column_tree=None)


def picker_order(rois: Sequence[Roi]) -> list[Roi]:
    """RoIs by group (palette order), keeping their order within a group."""
    rank = {g: k for k, g in enumerate(groups_in_order(rois))}
    return sorted(rois, key=lambda r: rank[r.grp])
