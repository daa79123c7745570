"""Explanation drift: do a cohort's explanations differ from a reference cohort's, class by class?

For target class a, every case contributes its matrix row ``E_x[a, :]`` over the model's
class regions (the masses the reference cases have too; extra RoIs such as pathology
annotations exist only for some cases). A row is a composition (its masses sum to 1), so
rows are compared in Aitchison geometry: centred log-ratios ``log m_b - mean_b log m_b``
of the masses floored at ``MASS_FLOOR`` (on raw masses the few large cells, the class
itself and the background, hide consistent shifts of the many small ones). Two cohorts of
rows are compared with the energy distance (Székely & Rizzo), a two-sample statistic that
is zero only when the two distributions are equal,

    E = 2 mean ||x - r|| - mean ||x - x'|| - mean ||r - r'||     (x: new rows, r: reference rows),

with a permutation p-value ``(1 + #{E_perm >= E}) / (1 + P)`` and Benjamini-Hochberg
q-values across the classes of one comparison. Rows of a case whose class is absent (NaN)
are left out. Large cohorts are subsampled to ``max_cases`` rows each for the test
(pairwise distances); the cell-level differences use every case.

Volume: the raw mass of a region is about its share of the volume for any diffuse map, so
clr(mass) = clr(volume share) + clr(density) and a change of field of view or body size reads
as drift. The tests run on the lift (mass / volume share: its clr is the density part) by
default; beside each class's test the same test on raw mass (``p_value_raw``), and a control
row (target ``VOLUME_TARGET``) tests the cohorts' volume shares alone: a class whose raw drift
does not survive on the lift while the volume shares drift is a volume effect.

Cells: per (a, b), the difference of means (new - reference), Hedges' g and the
permutation p / BH q-values of ``analysis.compare.permutation_test`` over all cells.
Cases: a case's drift score for class a is its mean distance to the reference rows minus
the mean distance between two reference rows (leave-one-out for reference cases): about
0 for a typical reference case, larger the further the case lies from the reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from agg2exp_core import store
from agg2exp_core.analysis.compare import DEFAULT_STOP_AT, benjamini_hochberg, permutation_test, permutations_for_fdr
from agg2exp_core.analysis.masses import RAW_KIND, check_kind, comparison_cube
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import AVERAGE_TARGET, COMPARISON_KIND, VOLUME_TARGET

PERMUTATION_BATCH = 500
MASS_FLOOR = 1e-4      # masses below 0.01 % count as 0.01 % in the log-ratios


@dataclass(frozen=True)
class DriftConfig:
    reference: str                      # dataset of the reference cohort
    n_permutations: int = 2000          # per class test
    max_cases: int = 300                # rows per cohort in the energy test (subsampled beyond)
    cell_permutations: int | None = None  # None: enough for one cell to pass BH over all cells
    seed: int = 0
    kind: str = COMPARISON_KIND         # mass kind of the rows (volume-adjusted lift; "abs": raw mass)

    def __post_init__(self):
        check_kind(self.kind, "--mass-kind")
        if self.n_permutations < 1:
            raise InputError("--drift-permutations", "must be at least 1")
        if self.max_cases < 2:
            raise InputError("--drift-max-cases", "must be at least 2")


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Energy distance of two samples of rows (Euclidean), the V-statistic form."""
    pooled = np.concatenate([a, b])
    return float(_energy_from_labels(cdist(pooled, pooled), _membership(len(a), len(b))[None, :])[0])


def energy_test(a: np.ndarray, b: np.ndarray, n_permutations: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(energy distance, permutation p-value) of two samples of rows ``[n, d]``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"samples must be [n, d] with the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    pooled = np.concatenate([a, b])
    distances = cdist(pooled, pooled)
    labels = _membership(len(a), len(b))
    observed = _energy_from_labels(distances, labels[None, :])[0]
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    while done < n_permutations:
        size = min(PERMUTATION_BATCH, n_permutations - done)
        shuffled = rng.permuted(np.tile(labels, (size, 1)), axis=1)
        exceed += int((_energy_from_labels(distances, shuffled) >= observed - 1e-12 * max(1.0, observed)).sum())
        done += size
    return float(observed), (1.0 + exceed) / (1.0 + n_permutations)


def _membership(n_a: int, n_b: int) -> np.ndarray:
    labels = np.zeros(n_a + n_b)
    labels[:n_a] = 1.0
    return labels


def _energy_from_labels(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Energy distance for each row of ``labels`` ``[P, n]`` (1 = sample a) from the pooled distances."""
    n_a = labels.sum(axis=1)
    n_b = labels.shape[1] - n_a
    spread = labels @ distances                       # [P, n]: sum of distances to the a-members
    within_a = (spread * labels).sum(axis=1)
    between = (spread * (1.0 - labels)).sum(axis=1)
    within_b = distances.sum() - within_a - 2.0 * between
    return 2.0 * between / (n_a * n_b) - within_a / n_a ** 2 - within_b / n_b ** 2


def centred_log_ratios(rows: np.ndarray, floor: float = MASS_FLOOR) -> np.ndarray:
    """clr transform of compositions ``[n, parts]`` (NaN rows stay NaN)."""
    logs = np.log(np.clip(np.asarray(rows, dtype=float), floor, None))
    return logs - logs.mean(axis=1, keepdims=True)


def class_rows(cube: np.ndarray, t_index: int, sources: list[int], class_sources: list[int]) -> np.ndarray:
    """Centred log-ratio rows ``[cases, class sources]`` of one target (NaN where the class is absent)."""
    keep = [sources.index(s) for s in class_sources if s in sources]
    return centred_log_ratios(cube[:, t_index, keep])


def _present(rows: np.ndarray) -> np.ndarray:
    return np.isfinite(rows).all(axis=1)


def _subsample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= limit else rows[np.sort(rng.choice(len(rows), limit, replace=False))]


def class_tests(ref_rows: list[np.ndarray], new_rows: list[np.ndarray], config: DriftConfig) -> pd.DataFrame:
    """Per class index: statistic, p, q (BH across classes), n_ref, n_new."""
    rng = np.random.default_rng(config.seed)
    out = []
    for k, (ref, new) in enumerate(zip(ref_rows, new_rows)):
        ref, new = ref[_present(ref)], new[_present(new)]
        statistic, p = energy_test(_subsample(new, config.max_cases, rng), _subsample(ref, config.max_cases, rng),
                                   config.n_permutations, config.seed + k)
        out.append([k, statistic, p, len(ref), len(new)])
    frame = pd.DataFrame(out, columns=["index", "statistic", "p_value", "n_ref", "n_new"])
    frame["q_value"] = benjamini_hochberg(frame.p_value.to_numpy())
    return frame


def hedges_g(new: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Standardised mean difference (new - reference) per cell, small-sample corrected; NaN-aware."""
    (m1, v1, n1), (m2, v2, n2) = _moments(new), _moments(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
        g = (m1 - m2) / pooled * (1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0))
    g[~np.isfinite(g) | (n1 < 2) | (n2 < 2)] = np.nan
    return g


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample variance and count per cell of ``[n, *cells]``, ignoring NaN."""
    present = np.isfinite(x)
    n = present.sum(axis=0).astype(float)
    values = np.where(present, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / n
        variance = (np.where(present, x - mean, 0.0) ** 2).sum(axis=0) / (n - 1)
    return mean, variance, n


def case_scores(rows: np.ndarray, reference: np.ndarray, is_reference: np.ndarray) -> np.ndarray:
    """Drift score of every row against the reference rows (leave-one-out where a row is a reference row).

    ``reference``: indices into ``rows`` of the reference cases whose class is present.
    """
    scores = np.full(len(rows), np.nan)
    present = _present(rows)
    if len(reference) < 3:
        return scores
    ref_rows = rows[reference]
    within = cdist(ref_rows, ref_rows)
    n = len(reference)
    baseline = within.sum() / (n * (n - 1))                       # mean distance of two reference rows
    to_ref = cdist(rows[present], ref_rows)                       # [present rows, reference rows]
    position = {int(r): j for j, r in enumerate(reference)}
    values = []
    for row_index, distances in zip(np.flatnonzero(present), to_ref):
        if is_reference[row_index] and int(row_index) in position:
            j = position[int(row_index)]                          # leave the case itself out
            others = (within.sum() - 2.0 * within[j].sum()) / ((n - 1) * (n - 2))
            values.append((distances.sum() - distances[j]) / (n - 1) - others)
        else:
            values.append(distances.mean() - baseline)
    scores[present] = values
    return scores


@dataclass
class DriftResult:
    reference: str
    tests: pd.DataFrame      # dataset, target_id, statistic, p_value, q_value, n_ref, n_new
    cells: pd.DataFrame      # dataset, target_id, source_id, mean_ref, mean_new, difference, effect_size, p, q
    cases: pd.DataFrame      # case_id, target_id, score


def compare_cohorts(cube: np.ndarray, targets: list[int], sources: list[int], class_sources: list[int],
                    new: np.ndarray, ref: np.ndarray, config: DriftConfig, label: str = "cohort") -> tuple[pd.DataFrame,
                                                                                                       pd.DataFrame]:
    """Class tests and cell differences of one cohort (``new``: bool mask of cases) against ``ref``.

    ``cube``: local matrices ``[cases, targets, sources]``. Returns (tests, cells), both with
    a ``dataset`` column holding ``label``.
    """
    rows_ref = [class_rows(cube[ref], t, sources, class_sources) for t in range(len(targets))]
    rows_new = [class_rows(cube[new], t, sources, class_sources) for t in range(len(targets))]
    tests = class_tests(rows_ref, rows_new, config)
    tests.insert(0, "target_id", [targets[i] for i in tests.pop("index")])
    tests.insert(0, "dataset", label)
    n_cells = len(targets) * len(sources)
    permutations = config.cell_permutations or permutations_for_fdr(n_cells)
    result = permutation_test(cube[new], cube[ref], n_permutations=permutations, seed=config.seed,
                              stop_at=DEFAULT_STOP_AT)   # the count grows with the cells: stop the null ones early
    g = hedges_g(cube[new], cube[ref])
    t_idx, s_idx = np.meshgrid(np.arange(len(targets)), np.arange(len(sources)), indexing="ij")
    cells = pd.DataFrame({"dataset": label, "target_id": np.asarray(targets)[t_idx.ravel()],
                          "source_id": np.asarray(sources)[s_idx.ravel()], "mean_ref": result.mean_b.ravel(),
                          "mean_new": result.mean_a.ravel(), "difference": result.difference.ravel(),
                          "effect_size": g.ravel(), "p_value": result.p_values.ravel(),
                          "q_value": result.q_values.ravel()})
    return tests, cells.dropna(subset=["difference"]).reset_index(drop=True)


def drift_case_scores(cube: np.ndarray, case_ids: list[str], targets: list[int], sources: list[int],
                      class_sources: list[int], ref: np.ndarray, config: DriftConfig) -> pd.DataFrame:
    """Drift score of every case per class and averaged over classes (target -1)."""
    rng = np.random.default_rng(config.seed)
    frames = []
    for t in range(len(targets)):
        rows = class_rows(cube, t, sources, class_sources)
        reference = np.flatnonzero(ref & _present(rows))
        if len(reference) > config.max_cases:
            reference = np.sort(rng.choice(reference, config.max_cases, replace=False))
        is_reference = np.zeros(len(rows), dtype=bool)
        is_reference[reference] = True
        frames.append(pd.DataFrame({"case_id": case_ids, "target_id": targets[t],
                                    "score": case_scores(rows, reference, is_reference)}))
    per_class = pd.concat(frames, ignore_index=True)
    mean = per_class.groupby("case_id", sort=False)["score"].mean().reset_index().assign(target_id=AVERAGE_TARGET)
    return pd.concat([per_class, mean[["case_id", "target_id", "score"]]], ignore_index=True).dropna(subset=["score"])


def drift_analysis(con, run_id: str, config: DriftConfig) -> DriftResult:
    """Every other dataset of the run against the reference dataset; written in one transaction."""
    kind, case_ids, targets, sources, cube = comparison_cube(con, run_id, config.kind)
    if not case_ids:
        raise InputError(run_id, "the run has no local importance rows")
    raw_cube = store.local_matrices(con, run_id, RAW_KIND)[3] if kind != RAW_KIND else cube
    meta = store.case_metadata(con, case_ids)
    datasets = meta.dataset.astype(str).to_numpy()
    if config.reference not in set(datasets):
        raise InputError("--drift-reference", f"no dataset '{config.reference}' among the run's cases "
                                              f"(datasets: {', '.join(sorted(set(datasets)))})")
    class_sources = [s for s in store.class_roi_ids(con) if s in sources]
    ref = datasets == config.reference
    tests, cells = [], []
    shares = volume_share_rows(con, run_id, case_ids, class_sources)
    for dataset in sorted(set(datasets) - {config.reference}):
        new = datasets == dataset
        t, c = compare_cohorts(cube, targets, sources, class_sources, new, ref, config, dataset)
        tests.append(with_raw_and_volume(t, raw_cube, targets, sources, class_sources, shares, new, ref, config, kind))
        cells.append(c)
    result = DriftResult(config.reference,
                         pd.concat(tests, ignore_index=True) if tests else _empty_tests(),
                         pd.concat(cells, ignore_index=True) if cells else _empty_cells(),
                         drift_case_scores(cube, case_ids, targets, sources, class_sources, ref, config))
    write_drift(con, run_id, result, config)
    return result


def volume_share_rows(con, run_id: str, case_ids: list[str], class_sources: list[int]) -> np.ndarray:
    """clr of the class regions' volume shares ``[cases, class sources]`` (NaN rows where volumes are unknown)."""
    cases, sources, shares = store.volume_shares(con, run_id)
    index = {c: i for i, c in enumerate(cases)}
    table = np.full((len(case_ids), len(class_sources)), np.nan)
    keep = [sources.index(s) for s in class_sources if s in sources]
    if len(keep) == len(class_sources):
        table = shares[np.ix_([index[c] for c in case_ids], keep)]
    return centred_log_ratios(table)


def with_raw_and_volume(tests: pd.DataFrame, raw_cube: np.ndarray, targets: list[int], sources: list[int],
                        class_sources: list[int], shares: np.ndarray, new: np.ndarray, ref: np.ndarray,
                        config: DriftConfig, kind: str) -> pd.DataFrame:
    """The class tests with the same tests on raw mass beside them, and the volume-share control row."""
    tests = tests.assign(kind=kind)
    if kind == RAW_KIND:
        tests = tests.assign(p_value_raw=tests.p_value, q_value_raw=tests.q_value)
    else:
        raw = class_tests([class_rows(raw_cube[ref], t, sources, class_sources) for t in range(len(targets))],
                          [class_rows(raw_cube[new], t, sources, class_sources) for t in range(len(targets))], config)
        tests = tests.assign(p_value_raw=raw.p_value.to_numpy(), q_value_raw=raw.q_value.to_numpy())
    control = class_tests([shares[ref]], [shares[new]], config)
    if control.n_ref.iloc[0] >= 2 and control.n_new.iloc[0] >= 2:
        row = control.drop(columns="index").assign(dataset=tests.dataset.iloc[0] if len(tests) else "",
                                                   target_id=VOLUME_TARGET, kind="volume", p_value_raw=np.nan,
                                                   q_value_raw=np.nan)
        tests = pd.concat([tests, row[tests.columns]], ignore_index=True)
    return tests


def _empty_tests() -> pd.DataFrame:
    return pd.DataFrame(columns=["dataset", "target_id", "statistic", "p_value", "n_ref", "n_new", "q_value", "kind",
                                 "p_value_raw", "q_value_raw"])


def _empty_cells() -> pd.DataFrame:
    return pd.DataFrame(columns=["dataset", "target_id", "source_id", "mean_ref", "mean_new", "difference",
                                 "effect_size", "p_value", "q_value"])


def write_drift(con, run_id: str, result: DriftResult, config: DriftConfig) -> None:
    tests = result.tests.assign(run_id=run_id, reference=result.reference, n_permutations=config.n_permutations)
    frames = {
        "drift": tests[["run_id", "dataset", "target_id", "statistic", "p_value", "q_value", "n_ref", "n_new",
                        "reference", "n_permutations", "kind", "p_value_raw", "q_value_raw"]],
        "drift_cells": result.cells.assign(run_id=run_id)[["run_id", "dataset", "target_id", "source_id", "mean_ref",
                                                           "mean_new", "difference", "effect_size", "p_value",
                                                           "q_value"]],
        "drift_cases": result.cases.assign(run_id=run_id)[["run_id", "case_id", "target_id", "score"]],
    }
    store.replace_analysis(con, run_id, frames)   # one transaction: the three tables or none
