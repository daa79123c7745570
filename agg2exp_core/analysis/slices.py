"""Failure slices: the subgroups of a cohort on which the model's Dice drops, found automatically.

For every class (and AVERAGE_TARGET: the mean over classes) the search scores every candidate
subgroup of ``analysis.slice_candidates`` (metadata conditions and their conjunctions, clusters of
the explanations) by the drop of Dice against the rest of the cases:

- the Dice: the true Dice where the class is labelled on enough cases (``uses_labels``), else the
  expected Dice of ``analysis.quality`` (``dice_estimate``); ``SliceConfig.dice`` can force either;
- ``effect``: mean Dice of the rest minus mean Dice of the slice (positive: the slice is worse);
- the p-value: one-sided Wilcoxon-Mann-Whitney rank-sum test (slice lower), from the normal
  approximation of the rank sum's permutation distribution with the tie correction and a continuity
  correction. Why ranks: Dice is bounded and heavy-tailed (a few failed cases near 0), and a
  rank test's null distribution does not depend on it; why the approximation and not sampled
  permutations: thousands of candidates go through one Benjamini-Hochberg correction, whose
  threshold (alpha / candidates, ~1e-5) a few thousand permutations cannot reach, while the exact
  rank-sum distribution has lighter tails than the normal one, so the approximation errs on the
  conservative side there. Hand-written because the rank sums of all candidates (and of simulated
  repetitions) are one matrix product, where ``scipy.stats.mannwhitneyu`` would run per candidate;
  ``tests/core/analysis/test_slices.py`` checks it against SciPy and measures its null rate;
- Benjamini-Hochberg over all candidates of all classes (``scipy.stats.false_discovery_control``);
- pruning: a conjunction is dropped where one of its conditions alone has at least its z; then, per
  class in order of evidence (z), a slice whose Jaccard overlap with a kept one exceeds
  ``max_overlap`` is dropped; at most ``max_slices`` per class are kept (q below ``threshold``).

The slices kept are ranked per class by z (the strongest evidence of a drop first).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from agg2exp_core.analysis.slice_candidates import Candidates, cluster_candidates, log_lift_rows, metadata_candidates
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import AVERAGE_TARGET, COMPARISON_KIND

DICE_CHOICES = ("auto", "labels", "expected")
SLICE_COLUMNS = ["slice_id", "class_id", "source", "description", "members", "n", "effect", "p_value", "q_value",
                 "uses_labels", "rank", "mean_in", "mean_out", "z"]


@dataclass(frozen=True)
class SliceConfig:
    min_support: int = 8                     # cases in the slice and outside it, at least
    max_conditions: int = 2                  # metadata conditions per slice (1 or 2)
    threshold: float = 0.05                  # BH q below which a slice is reported
    bins: int = 3                            # quantile bins of a numeric field (3: tertiles)
    cluster_counts: tuple[int, ...] = (2, 3, 4)   # k of the explanation clusters (empty: none)
    max_overlap: float = 0.5                 # Jaccard overlap above which a lower-ranked slice is redundant
    max_slices: int = 10                     # slices kept per class
    max_levels: int = 20                     # categorical fields with more values are not searched
    top_cells: int = 8                       # cells of the "why" per slice
    dice: str = "auto"                       # "auto", "labels" (true Dice only), "expected" (expected Dice only)
    kind: str = COMPARISON_KIND              # mass kind of the clusters and the cells
    seed: int = 0
    # the model's training cases are left out (their Dice is in-sample: "split = test" would top every
    # class), unless every case is one of them; None: search every case
    exclude_split: str | None = "train"

    def __post_init__(self):
        if self.min_support < 2:
            raise InputError("--slice-min-support", f"must be at least 2, got {self.min_support}")
        if self.max_conditions not in (1, 2):
            raise InputError("--slice-max-conditions", f"must be 1 or 2, got {self.max_conditions}")
        if not 0 < self.threshold < 1:
            raise InputError("--slice-threshold", f"must lie in (0, 1), got {self.threshold}")
        if self.bins < 2:
            raise InputError("--slice-bins", f"must be at least 2, got {self.bins}")
        if self.dice not in DICE_CHOICES:
            raise InputError("--slice-dice", f"must be one of {', '.join(DICE_CHOICES)}, got {self.dice!r}")
        if not 0 < self.max_overlap <= 1:
            raise InputError("--slice-max-overlap", f"must lie in (0, 1], got {self.max_overlap}")


@dataclass
class SliceInputs:
    """Everything the search reads, one row per case (``case_ids`` order); built from a store by
    ``analysis.slice_store.slice_inputs`` or directly (benchmarks, tests).

    ``metadata``: one column per field (categorical as text, numeric as float, ``pathologies``
    ';'-joined). ``dice`` / ``expected``: true and expected Dice, one column per class id
    (AVERAGE_TARGET included), NaN where unknown. ``lift``: ``[cases, targets, sources]`` of the
    volume-adjusted mass (None: no explanation clusters), ``targets`` / ``sources`` its ids,
    ``names`` RoI id -> name.
    """

    case_ids: list[str]
    metadata: pd.DataFrame
    dice: pd.DataFrame
    expected: pd.DataFrame
    lift: np.ndarray | None = None
    targets: list[int] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)


@dataclass
class SliceResult:
    slices: pd.DataFrame          # SLICE_COLUMNS, ranked per class
    members: pd.DataFrame         # slice_id, case_id
    cells: pd.DataFrame           # slice_id, target_id, source_id, mean_in, mean_out, difference, p_value, q_value
    n_candidates: int             # candidates tested (the BH family)
    classes: pd.DataFrame         # class_id, uses_labels, n_cases, n_candidates


def rank_sum_test(masks: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, one-sided p, effect) of every mask ``[candidates, n]`` for outcomes ``y`` ``[n]`` or ``[reps, n]``.

    z > 0 when the masked cases rank lower; ``effect`` = mean(rest) - mean(masked). Outcomes must be
    finite; results have shape ``[candidates]`` or ``[reps, candidates]``.
    """
    y = np.asarray(y, dtype=float)
    single = y.ndim == 1
    y = np.atleast_2d(y)
    m = masks.astype(float)
    n, n1 = y.shape[1], m.sum(axis=1)
    n2 = n - n1
    ranks = stats.rankdata(y, axis=1)
    u = ranks @ m.T - n1 * (n1 + 1) / 2.0                                # [reps, candidates]
    ties = np.array([_tie_term(row) for row in y])[:, None]
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (n1 * n2 / 2.0 - u - 0.5) / np.sqrt(variance)                 # continuity-corrected, slice lower
        z = np.where(variance > 0, z, 0.0)
        mean_in = (y @ m.T) / n1
        mean_out = (y.sum(axis=1, keepdims=True) - y @ m.T) / n2
    p = stats.norm.sf(z)
    effect = mean_out - mean_in
    return (z[0], p[0], effect[0]) if single else (z, p, effect)


def _tie_term(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    return float((counts ** 3 - counts).sum())


def class_outcome(inputs: SliceInputs, class_id: int, config: SliceConfig) -> tuple[np.ndarray, bool] | None:
    """(Dice per case, NaN where unknown; uses_labels) of one class, or None with too few cases."""
    enough = 2 * config.min_support
    true = inputs.dice[class_id].to_numpy(float) if class_id in inputs.dice else np.full(len(inputs.case_ids), np.nan)
    expected = (inputs.expected[class_id].to_numpy(float) if class_id in inputs.expected
                else np.full(len(inputs.case_ids), np.nan))
    labelled = np.isfinite(true).sum()
    if config.dice != "expected" and labelled >= max(enough, 0.5 * len(true)):
        return true, True
    if config.dice != "labels" and np.isfinite(expected).sum() >= enough:
        return expected, False
    return None


def class_candidates(inputs: SliceInputs, class_id: int, metadata: Candidates, config: SliceConfig) -> Candidates:
    """The metadata candidates plus the explanation clusters of this class (or of whole matrices)."""
    if inputs.lift is None or not config.cluster_counts:
        return metadata
    sources = [s for s in inputs.sources if s in inputs.targets]        # class regions: present in every case
    columns = [inputs.sources.index(s) for s in sources]
    if class_id == AVERAGE_TARGET:
        rows = inputs.lift[:, :, columns].reshape(len(inputs.case_ids), -1)
        names = [f"{inputs.names.get(s, s)} ({inputs.names.get(t, t)})" for t in inputs.targets for s in sources]
        label = "all classes"
    elif class_id in inputs.targets:
        rows = inputs.lift[:, inputs.targets.index(class_id), columns]
        names = [str(inputs.names.get(s, s)) for s in sources]
        label = str(inputs.names.get(class_id, class_id))
    else:
        return metadata
    clusters = cluster_candidates(log_lift_rows(rows), names, tuple(config.cluster_counts), config.min_support,
                                  config.seed, label)
    return metadata.plus(clusters)


def score_class(candidates: Candidates, outcome: np.ndarray, config: SliceConfig) -> pd.DataFrame:
    """Rank-sum test of every candidate with enough labelled cases in and out (one row per candidate)."""
    known = np.isfinite(outcome)
    masks = candidates.masks[:, known]
    n1 = masks.sum(axis=1)
    testable = (n1 >= config.min_support) & (known.sum() - n1 >= config.min_support)
    z, p, effect = rank_sum_test(masks[testable], outcome[known]) if testable.any() else ([], [], [])
    y = outcome[known]
    index = np.flatnonzero(testable)
    with np.errstate(invalid="ignore"):
        mean_in = (masks[testable] @ y) / n1[testable] if testable.any() else []
    return pd.DataFrame({"candidate": index, "n": n1[testable].astype(int), "z": z, "p_value": p,
                         "effect": effect, "mean_in": mean_in,
                         "mean_out": np.asarray(mean_in) + np.asarray(effect)})


def prune(scored: pd.DataFrame, candidates: Candidates, config: SliceConfig) -> pd.DataFrame:
    """The significant, non-redundant slices of one class, by z (module docstring)."""
    z_of = dict(zip(scored.candidate, scored.z))
    keep_rows, kept_masks = [], []
    for row in scored[scored.q_value < config.threshold].sort_values(["z", "candidate"],
                                                                     ascending=[False, True]).itertuples():
        parents = candidates.parents[row.candidate]
        if any(z_of.get(p, -np.inf) >= row.z for p in parents):
            continue                                  # a condition alone explains it at least as well
        mask = candidates.masks[row.candidate]
        if any(_jaccard(mask, other) > config.max_overlap for other in kept_masks):
            continue
        keep_rows.append(row.Index)
        kept_masks.append(mask)
        if len(keep_rows) == config.max_slices:
            break
    return scored.loc[keep_rows]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def search(inputs: SliceInputs, config: SliceConfig = SliceConfig()) -> SliceResult:
    """The failure slices of every class with enough cases, BH-corrected together (no cells: see slice_store)."""
    if len(inputs.metadata) != len(inputs.case_ids):
        raise ValueError(f"metadata has {len(inputs.metadata)} rows for {len(inputs.case_ids)} cases")
    metadata = metadata_candidates(inputs.metadata.reset_index(drop=True), config.min_support,
                                   config.max_conditions, config.bins, config.max_levels)
    scored, families, classes = [], {}, []
    for class_id in _class_ids(inputs):
        outcome = class_outcome(inputs, class_id, config)
        if outcome is None:
            continue
        values, uses_labels = outcome
        candidates = class_candidates(inputs, class_id, metadata, config)
        frame = score_class(candidates, values, config).assign(class_id=class_id, uses_labels=uses_labels)
        families[class_id] = candidates
        scored.append(frame)
        classes.append((class_id, uses_labels, int(np.isfinite(values).sum()), len(frame)))
    table = pd.concat(scored, ignore_index=True) if scored else pd.DataFrame(
        columns=["candidate", "n", "z", "p_value", "effect", "mean_in", "mean_out", "class_id", "uses_labels"])
    table["q_value"] = stats.false_discovery_control(table.p_value.to_numpy(float)) if len(table) else []
    return _result(table, families, classes, inputs, config)


def _class_ids(inputs: SliceInputs) -> list[int]:
    ids = [c for c in list(inputs.dice.columns) + list(inputs.expected.columns) if c != AVERAGE_TARGET]
    return [AVERAGE_TARGET] + sorted(set(int(c) for c in ids))


def _result(table: pd.DataFrame, families: dict, classes: list, inputs: SliceInputs,
            config: SliceConfig) -> SliceResult:
    """Prune each class's significant candidates, number the kept slices (1, 2, ... over all classes)."""
    rows, members = [], []
    for class_id, candidates in families.items():
        kept = prune(table[table.class_id == class_id], candidates, config)
        for rank, row in enumerate(kept.itertuples(), start=1):
            slice_id = len(rows) + 1
            rows.append([slice_id, class_id, candidates.sources[row.candidate],
                         candidates.descriptions[row.candidate], int(row.n), int(row.n), float(row.effect),
                         float(row.p_value), float(row.q_value), bool(row.uses_labels), rank, float(row.mean_in),
                         float(row.mean_out), float(row.z)])
            mask = candidates.masks[row.candidate]
            known = np.isfinite(class_outcome(inputs, class_id, config)[0])
            members += [(slice_id, inputs.case_ids[i]) for i in np.flatnonzero(mask & known)]
    return SliceResult(pd.DataFrame(rows, columns=SLICE_COLUMNS),
                       pd.DataFrame(members, columns=["slice_id", "case_id"]), empty_cells(), len(table),
                       pd.DataFrame(classes, columns=["class_id", "uses_labels", "n_cases", "n_candidates"]))


def empty_cells() -> pd.DataFrame:
    return pd.DataFrame(columns=["slice_id", "target_id", "source_id", "mean_in", "mean_out", "difference",
                                 "p_value", "q_value"])
