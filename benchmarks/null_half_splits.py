"""A null with real explanations: random half-splits of one dataset (issue 25 (b)).

    OMP_NUM_THREADS=1 python benchmarks/null_half_splits.py [--db data/demo.duckdb] [--run RUN] [--splits 200]

The cases of one dataset (default: the demo's reference dataset) are split into two random
halves, again and again. Nothing distinguishes the halves, so every test the product runs on
two cohorts must reject at its nominal level or below:

- drift (energy distance per class, the product's ``compare_cohorts`` on the volume-adjusted kind,
  BH over classes): share of class tests with p < 0.05, share with q < 0.05, share of splits
  with any q < 0.05 (the family-wise rate BH controls under the complete null);
- comparison per cell (Welch permutation test, BH over cells): the same three shares;
- the outlier tests of sex and age (Fisher exact, Mann-Whitney U) against each class's stored
  outlier flags, with the halves as "sex" and the ages permuted within the dataset.

Each share is printed with its Monte-Carlo standard error (binomial; over splits for the
split-level share, which is what the splits make independent).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
NOMINAL = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(ROOT / "data" / "demo.duckdb"))
    parser.add_argument("--run", help="run id (default: the store's first vanilla-gradient run)")
    parser.add_argument("--dataset", default="reference")
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from agg2exp_core import store
    from agg2exp_core.analysis.compare import benjamini_hochberg
    from agg2exp_core.analysis.drift import DriftConfig, compare_cohorts
    from agg2exp_core.analysis.masses import comparison_cube
    from agg2exp_core.store import queries

    with store.connect(args.db, read_only=True) as con:
        runs = queries.matrix_runs(con)
        run_id = args.run or runs[runs.method == "vg"].run_id.iloc[0]
        kind, case_ids, targets, sources, cube = comparison_cube(con, run_id, "lift")
        meta = queries.case_metadata(con, case_ids)
        anomaly = queries.anomaly_scores(con, run_id)
        class_sources = queries.class_roi_ids(con)
    chosen = (meta.dataset == args.dataset).to_numpy()
    cube, meta = cube[chosen], meta[chosen].reset_index(drop=True)
    ids = meta.case_id.tolist()
    print(f"run {run_id}, kind {kind}, dataset {args.dataset}: {len(ids)} cases, {len(targets)} classes, "
          f"{len(targets) * len(sources)} cells, {args.splits} random half-splits")
    rng = np.random.default_rng(args.seed)
    config = DriftConfig(args.dataset, kind=kind)
    drift_p, drift_q, cell_p, cell_q, sex_p, age_p = [], [], [], [], [], []
    flags = anomaly[anomaly.case_id.isin(ids) & (anomaly.target_id >= 0)].pivot(
        index="case_id", columns="target_id", values="is_outlier").reindex(ids).fillna(False).to_numpy(bool)
    started = time.time()
    for split in range(args.splits):
        half = np.zeros(len(ids), dtype=bool)
        half[rng.choice(len(ids), len(ids) // 2, replace=False)] = True
        tests, cells = compare_cohorts(cube, targets, sources, class_sources, half, ~half,
                                       DriftConfig(args.dataset, kind=kind, seed=split))
        drift_p.append(tests.p_value.to_numpy())
        drift_q.append(tests.q_value.to_numpy())
        cell_p.append(cells.p_value.to_numpy())
        cell_q.append(cells.q_value.to_numpy())
        sex_p.append(_fisher_per_class(flags, half))
        age_p.append(_mann_whitney_per_class(flags, rng.permutation(meta.age.to_numpy(float))))
    seconds = time.time() - started
    _report("drift per class (energy, BH over classes)", drift_p, drift_q)
    _report("comparison per cell (Welch permutations, BH over cells)", cell_p, cell_q)
    _report("outliers vs sex (Fisher exact; halves as sex)", sex_p, [benjamini_hochberg(p) for p in sex_p])
    _report("outliers vs age (Mann-Whitney U; ages permuted)", age_p, [benjamini_hochberg(p) for p in age_p])
    print(f"{seconds:.0f} s for {args.splits} splits ({config.n_permutations} permutations per class test)")


def _fisher_per_class(flags: np.ndarray, group: np.ndarray) -> np.ndarray:
    p = np.full(flags.shape[1], np.nan)
    for c in range(flags.shape[1]):
        table = [[np.sum(~flags[:, c] & g), np.sum(flags[:, c] & g)] for g in (group, ~group)]
        if np.asarray(table).sum(axis=0).all():
            p[c] = stats.fisher_exact(table)[1]
    return p


def _mann_whitney_per_class(flags: np.ndarray, ages: np.ndarray) -> np.ndarray:
    p = np.full(flags.shape[1], np.nan)
    for c in range(flags.shape[1]):
        if flags[:, c].any() and (~flags[:, c]).any():
            p[c] = stats.mannwhitneyu(ages[flags[:, c]], ages[~flags[:, c]], alternative="two-sided").pvalue
    return p


def _report(label: str, p_values: list[np.ndarray], q_values: list[np.ndarray]) -> None:
    p = np.concatenate(p_values)
    q = np.concatenate([np.asarray(v, dtype=float) for v in q_values])
    p, q = p[np.isfinite(p)], q[np.isfinite(q)]
    any_q = np.array([np.nanmin(v) < NOMINAL if np.isfinite(v).any() else False for v in q_values])
    print(f"- {label}: p < {NOMINAL} in {_share(p < NOMINAL)} of {len(p)} tests; "
          f"q < {NOMINAL} in {_share(q < NOMINAL)}; splits with any q < {NOMINAL}: {_share(any_q)} of {len(any_q)}")


def _share(hits: np.ndarray) -> str:
    rate = float(np.mean(hits)) if len(hits) else float("nan")
    return f"{rate:.3f} (MC SE {np.sqrt(rate * (1 - rate) / max(len(hits), 1)):.3f})"


if __name__ == "__main__":
    main()
