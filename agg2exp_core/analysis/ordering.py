"""Row/column orders of RoI matrices: by anatomical group or by hierarchical clustering.

The paper shows the global matrix with a dendrogram; ``cluster_order`` gives the leaf
order of an agglomerative clustering (scipy) together with the dendrogram's line
coordinates, so a plot can draw it next to the reordered matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.cluster.hierarchy import dendrogram, linkage

# Display order of anatomical groups (the paper's colour legend order).
GROUP_ORDER: tuple[str, ...] = ("cardiovascular", "organ", "muscle", "bone", "pathology", "other")


def group_order(groups: Sequence[str]) -> list[int]:
    """Indices sorted by anatomical group (GROUP_ORDER), keeping the given order inside a group."""
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    return sorted(range(len(groups)), key=lambda i: (rank.get(groups[i], len(rank)), i))


@dataclass(frozen=True)
class ClusterOrder:
    """Leaf order of a hierarchical clustering and its dendrogram lines.

    ``icoord``/``dcoord`` are scipy's dendrogram segments: leaf ``k`` of ``order`` sits at
    position ``5 + 10 k`` along ``icoord``; ``dcoord`` holds merge heights.
    """

    order: list[int]
    icoord: list[list[float]] = field(default_factory=list)
    dcoord: list[list[float]] = field(default_factory=list)


def cluster_order(matrix: np.ndarray, axis: int = 0, method: str = "average",
                  metric: str = "euclidean") -> ClusterOrder:
    """Cluster the rows (``axis=0``) or columns (``axis=1``) of a 2-D matrix.

    NaN entries count as 0. Fewer than three items keep their order (nothing to cluster).
    Uses scipy's optimal leaf ordering so neighbouring leaves are as similar as possible.
    """
    data = np.nan_to_num(np.asarray(matrix, dtype=float), nan=0.0)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {data.shape}")
    if axis == 1:
        data = data.T
    n = data.shape[0]
    if n < 3:
        return ClusterOrder(order=list(range(n)))
    tree = linkage(data, method=method, metric=metric, optimal_ordering=True)
    dendro = dendrogram(tree, no_plot=True)
    return ClusterOrder(order=[int(i) for i in dendro["leaves"]],
                        icoord=[list(map(float, x)) for x in dendro["icoord"]],
                        dcoord=[list(map(float, x)) for x in dendro["dcoord"]])
