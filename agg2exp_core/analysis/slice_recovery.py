"""How well a failure-slice search recovers a subgroup whose failure is known (planted cohorts).

``recovery`` finds, among the slices a search reported for one class, the one that best matches
the known subgroup (largest Jaccard overlap of their members) and says at which rank it came, with
the precision and recall of its members. A slice counts as the subgroup when the overlap reaches
``MATCH_JACCARD``; below it the subgroup was not found. ``null_rate`` measures the search's
false-positive rate the cheap valid way: metadata columns drawn at random (independent of
everything the model did) over one computed cohort, the search rerun for each draw; the share of
draws with any significant slice, and its Monte-Carlo standard error.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd

from agg2exp_core.analysis.slices import SliceConfig, SliceInputs, SliceResult, search

MATCH_JACCARD = 0.5


@dataclass(frozen=True)
class Recovery:
    """The best-matching slice of a class for a known subgroup (``rank`` None: not found)."""
    rank: int | None
    description: str
    precision: float
    recall: float
    jaccard: float
    effect: float
    q_value: float
    slice_id: int | None
    n_slices: int                      # slices reported for the class

    def top(self, k: int) -> bool:
        return self.rank is not None and self.rank <= k


def recovery(result: SliceResult, class_id: int, members: set[str]) -> Recovery:
    """Rank, precision and recall of the reported slice of ``class_id`` that best matches ``members``."""
    slices = result.slices[result.slices.class_id == class_id].sort_values("rank")
    best = None
    for row in slices.itertuples():
        found = set(result.members.case_id[result.members.slice_id == row.slice_id])
        hit = len(found & members)
        jaccard = hit / max(len(found | members), 1)
        if best is None or jaccard > best[0]:
            best = (jaccard, row, hit / max(len(found), 1), hit / max(len(members), 1))
    if best is None or best[0] < MATCH_JACCARD:
        return Recovery(None, "" if best is None else best[1].description, np.nan, np.nan,
                        0.0 if best is None else best[0], np.nan, np.nan, None, len(slices))
    jaccard, row, precision, recall = best
    return Recovery(int(row.rank), str(row.description), precision, recall, jaccard, float(row.effect),
                    float(row.q_value), int(row.slice_id), len(slices))


def null_rate(inputs: SliceInputs, draw: Callable[[np.random.Generator, int], pd.DataFrame], repeats: int,
              config: SliceConfig = SliceConfig(), seed: int = 0) -> tuple[float, float]:
    """(share of draws with any significant slice, its Monte-Carlo SE): ``draw(rng, n)`` returns metadata
    independent of the cohort; the explanation clusters are left out (they are the cohort's own, not null)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(repeats):
        drawn = replace(inputs, metadata=draw(rng, len(inputs.case_ids)), lift=None)
        hits += len(search(drawn, config).slices) > 0
    rate = hits / repeats
    return rate, float(np.sqrt(rate * (1 - rate) / repeats))
