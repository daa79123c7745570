"""Candidate subgroups of the failure-slice search (``analysis.slices``): boolean masks over the cases.

(i) Metadata: one condition per value of a categorical field (``sex = F``, ``scanner = B``), per
pathology (``pathology: pleural_effusion``, ``no pathology``) and, for a numeric field, per
quantile bin and per side of each cut (tertiles: ``age ≤ q1``, ``q1 < age ≤ q2``, ``age > q2``,
``age ≤ q2``, ``age > q1``); then conjunctions of up to ``max_conditions`` conditions on different
fields. Masks equal to an earlier one (same cases) are dropped: the simpler description stays.

(ii) Explanations: k-means clusters (scikit-learn) of the cases' rows of the volume-adjusted mass
(the lift) for one class, or of whole matrices for all classes. Rows are compared on the log of the
lift, not the lift: the lift is a ratio (0 to hundreds for small regions), so a few tiny regions
dominate Euclidean distances on it; its log makes over- and under-representation symmetric and
bounded by the floor. Columns are standardised and, beyond ``PCA_COMPONENTS`` columns, reduced by
PCA before k-means. The clusters are formed without Dice, so testing their Dice afterwards is valid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

METADATA, EXPLANATION = "metadata", "explanation"
SET_FIELDS = ("pathologies",)       # ';'-joined sets of names: one condition per name
LIFT_FLOOR, LIFT_CEILING = 1e-3, 1e3
PCA_COMPONENTS = 10


@dataclass(frozen=True)
class Candidates:
    """``masks [candidates, cases]`` (bool), their descriptions, sources and condition indices
    (``parents``: for a conjunction the indices of its single conditions, else empty)."""

    masks: np.ndarray
    descriptions: list[str]
    sources: list[str]
    parents: list[tuple[int, ...]]

    def __len__(self) -> int:
        return len(self.descriptions)

    @classmethod
    def empty(cls, n_cases: int) -> "Candidates":
        return cls(np.zeros((0, n_cases), dtype=bool), [], [], [])

    def plus(self, other: "Candidates") -> "Candidates":
        offset = len(self)
        return Candidates(np.concatenate([self.masks, other.masks]), self.descriptions + other.descriptions,
                          self.sources + other.sources,
                          self.parents + [tuple(i + offset for i in p) for p in other.parents])


def _number(value: float) -> str:
    return f"{value:.4g}"


def field_conditions(name: str, values: pd.Series, bins: int, max_levels: int) -> list[tuple[str, np.ndarray]]:
    """(description, mask) of every single condition on one field (missing values satisfy none)."""
    if name in SET_FIELDS:
        sets = values.fillna("").astype(str).str.split(";").map(lambda names: {n for n in names if n})
        out = [(f"pathology: {p}", sets.map(lambda s, p=p: p in s).to_numpy(bool))
               for p in sorted(set().union(*sets)) if p]
        return out + [("no pathology", sets.map(lambda s: not s).to_numpy(bool))] if out else out
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum() and numeric.nunique() > bins + 1:
        return _numeric_conditions(name, numeric.to_numpy(float), bins)
    present = values.dropna()
    levels = sorted(present.astype(str).unique())
    if len(levels) > max_levels:                     # identifiers, free text: no subgroup
        return []
    text = values.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else
                      (_number(v) if isinstance(v, (float, np.floating)) else str(v)))
    return [(f"{name} = {level}", (text == level).to_numpy(bool))
            for level in sorted(text.dropna().unique())]


def _numeric_conditions(name: str, x: np.ndarray, bins: int) -> list[tuple[str, np.ndarray]]:
    present = np.isfinite(x)
    cuts = np.unique(np.quantile(x[present], np.linspace(0, 1, bins + 1)[1:-1]))
    out = []
    edges = [-np.inf, *cuts, np.inf]
    with np.errstate(invalid="ignore"):
        for low, high in zip(edges[:-1], edges[1:]):
            if np.isinf(low):
                text = f"{name} ≤ {_number(high)}"
            elif np.isinf(high):
                text = f"{name} > {_number(low)}"
            else:
                text = f"{_number(low)} < {name} ≤ {_number(high)}"
            out.append((text, present & (x > low) & (x <= high)))
        if len(cuts) > 1:                             # the sides of each cut that are not bins already
            out += [(f"{name} ≤ {_number(c)}", present & (x <= c)) for c in cuts[1:]]
            out += [(f"{name} > {_number(c)}", present & (x > c)) for c in cuts[:-1]]
    return out


def metadata_candidates(metadata: pd.DataFrame, min_support: int, max_conditions: int, bins: int,
                        max_levels: int) -> Candidates:
    """Single conditions and their conjunctions (different fields), each with at least ``min_support``
    cases and at least ``min_support`` outside; duplicates of an earlier mask dropped."""
    n = len(metadata)
    singles, fields = [], []
    for name in metadata.columns:
        for text, mask in field_conditions(name, metadata[name], bins, max_levels):
            if min_support <= mask.sum() <= n - min_support:
                singles.append((text, mask))
                fields.append(name)
    if not singles:
        return Candidates.empty(n)
    masks = [m for _, m in singles]
    texts = [t for t, _ in singles]
    parents: list[tuple[int, ...]] = [() for _ in singles]
    if max_conditions >= 2:
        stack = np.array(masks)
        both = stack[:, None, :] & stack[None, :, :]               # [i, j, cases]: every pair at once
        support = both.sum(axis=2)
        for i, j in zip(*np.nonzero(np.triu(support >= min_support, k=1))):
            if fields[i] != fields[j] and support[i, j] <= n - min_support:
                masks.append(both[i, j])
                texts.append(f"{texts[i]} ∧ {texts[j]}")
                parents.append((int(i), int(j)))
    return _unique(Candidates(np.array(masks), texts, [METADATA] * len(texts), parents))


def _unique(candidates: Candidates) -> Candidates:
    """The first candidate of every distinct mask (singles come first, so they win over conjunctions)."""
    _, first = np.unique(np.packbits(candidates.masks, axis=1), axis=0, return_index=True)
    keep = np.sort(first)
    position = {int(k): i for i, k in enumerate(keep)}
    parents = [tuple(position.get(p, -1) for p in candidates.parents[k]) for k in keep]
    return Candidates(candidates.masks[keep], [candidates.descriptions[k] for k in keep],
                      [candidates.sources[k] for k in keep], [p if -1 not in p else () for p in parents])


def log_lift_rows(lift: np.ndarray) -> np.ndarray:
    """log of the lift ``[cases, features]``, clipped to [LIFT_FLOOR, LIFT_CEILING]; NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.log(np.clip(lift, LIFT_FLOOR, LIFT_CEILING))


def cluster_candidates(rows: np.ndarray, feature_names: list[str], counts: tuple[int, ...], min_support: int,
                       seed: int, label: str) -> Candidates:
    """k-means clusters of log-lift ``rows [cases, features]`` (cases with a NaN feature belong to none).

    Each cluster is described by its most distinctive feature (largest standardised mean difference
    against the other cases), e.g. "explanation cluster 2/3 of heart: more mass on aorta".
    """
    n = len(rows)
    complete = np.isfinite(rows).all(axis=1)
    usable = [k for k in counts if k >= 2 and complete.sum() >= k * min_support]
    if not usable or rows.shape[1] == 0:
        return Candidates.empty(n)
    z = StandardScaler().fit_transform(rows[complete])
    z = np.nan_to_num(z)                                          # constant columns
    if z.shape[1] > PCA_COMPONENTS:
        z = PCA(n_components=PCA_COMPONENTS, random_state=seed).fit_transform(z)
    standard = np.nan_to_num(StandardScaler().fit_transform(rows[complete]))
    masks, texts = [], []
    for k in usable:
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
        for j in range(k):
            inside = labels == j
            if not min_support <= inside.sum() <= complete.sum() - min_support:
                continue
            mask = np.zeros(n, dtype=bool)
            mask[np.flatnonzero(complete)[inside]] = True
            shift = standard[inside].mean(axis=0) - standard[~inside].mean(axis=0)
            top = int(np.argmax(np.abs(shift)))
            direction = "more" if shift[top] > 0 else "less"
            masks.append(mask)
            texts.append(f"explanation cluster {j + 1}/{k} of {label}: {direction} mass on {feature_names[top]}")
    if not masks:
        return Candidates.empty(n)
    return Candidates(np.array(masks), texts, [EXPLANATION] * len(texts), [() for _ in texts])
