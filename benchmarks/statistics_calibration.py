"""Calibration of the analyses' statistics against simulations with a known answer (issue 20).

    OMP_NUM_THREADS=1 python benchmarks/statistics_calibration.py [--root PATH] [--items 1,2,4,7,9]

``--root`` picks the code tree to import (e.g. the main checkout, for the "before" figures; only
functions whose signatures did not change are called, so both trees run). Items:

1. cohort comparison, equal means, 10 cases SD 0.03 vs 60 SD 0.01 (400 null cells, 2,000
   permutations): share of p < 0.05; equal variances; 200 random halves of one skewed cohort;
   power on a planted shift; wall time of a registry-sized test (2 x 1,000 cases, 323 cells).
2. 117 x 119 cells, 15 + 15 cases, 4 planted cells: cells found by BH (and BY where offered).
4. expected-Dice intervals, class residual SDs 0.01 / 0.04 / 0.12, nominal 0.80: coverage per
   class on new cases and on the fit cases (4 fit sets of 150, 1,000 new cases each).
7. bootstrap intervals of a mean, nominal 95 %, n = 8 and 32, skewed cells (lognormal,
   exponential, Beta(0.3, 3)), 2,000 cells each: coverage of each interval the tree offers.
9. Isolation-Forest parity on 32 simulated cases: Spearman(anomaly, Dice) of 50 single seeds
   against 10 independent averages over 20 seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def item1():
    from agg2exp_core.analysis.compare import permutation_test

    rng = np.random.default_rng(0)
    for label, sd_a, sd_b in (("unequal SD 0.03 (n=10) vs 0.01 (n=60)", 0.03, 0.01),
                              ("reverse SD 0.01 (n=10) vs 0.03 (n=60)", 0.01, 0.03),
                              ("equal SD 0.02", 0.02, 0.02)):
        a, b = rng.normal(0.1, sd_a, (10, 400)), rng.normal(0.1, sd_b, (60, 400))
        p = permutation_test(a, b, n_permutations=2000, seed=1, fdr=False, batch_size=1000).p_values
        print(f"  1 null, {label}: p < 0.05 in {np.mean(p < 0.05):.3f} of 400 cells")
    cohort = rng.lognormal(-2, 1, size=(40, 50))
    rates = []
    for split in range(200):
        order = rng.permutation(40)
        p = permutation_test(cohort[order[:12]], cohort[order[12:]], n_permutations=500, seed=split, fdr=False).p_values
        rates.append(np.mean(p < 0.05))
    print(f"  1 null, 200 random 12 / 28 splits of one lognormal cohort (50 cells): p < 0.05 in {np.mean(rates):.3f}")
    a, b = rng.normal(0.13, 0.03, (10, 400)), rng.normal(0.1, 0.01, (60, 400))
    p = permutation_test(a, b, n_permutations=2000, seed=2, fdr=False, batch_size=1000).p_values
    from scipy.stats import ttest_ind
    print(f"  1 power, shift 0.03 (one SD of the small cohort): {np.mean(p < 0.05):.3f} "
          f"(parametric Welch: {np.mean(ttest_ind(a, b, equal_var=False).pvalue < 0.05):.3f})")
    a, b = rng.random((1000, 17, 19)), rng.random((1000, 17, 19))
    a[:, 3, 4] += 0.1
    for stop_at in (None, 20):
        wall = time.perf_counter()
        permutation_test(a, b, n_permutations=13000, seed=0, batch_size=1000, stop_at=stop_at)
        print(f"  1 speed, 1000 + 1000 cases, 323 cells, 13,000 permutations, stop_at={stop_at}: "
              f"{time.perf_counter() - wall:.1f} s")


def item2():
    from agg2exp_core.analysis.compare import permutation_test, permutations_for_fdr

    rng = np.random.default_rng(5)
    a, b = rng.normal(0.5, 0.1, (15, 117, 119)), rng.normal(0.5, 0.1, (15, 117, 119))
    planted = [(0, 0), (40, 7), (80, 100), (116, 118)]
    for i, j in planted:
        a[:, i, j] += 0.5
    methods = ["bh"]
    try:
        permutations_for_fdr(10, 0.05, method="by")
        methods.append("by")
    except TypeError:
        pass
    for method in methods:
        n = permutations_for_fdr(117 * 119, 0.05, **({"method": method} if method == "by" else {}))
        wall = time.perf_counter()
        kwargs = {"fdr_method": method} if method == "by" else {}
        result = permutation_test(a, b, n_permutations=n, seed=6, stop_at=20, batch_size=1000, **kwargs)
        found = [tuple(int(v) for v in x) for x in np.argwhere(result.significant)]
        print(f"  2 {method.upper()}: {n} permutations, {time.perf_counter() - wall:.1f} s, smallest q "
              f"{np.nanmin(result.q_values):.4f}, significant cells {found} (planted {planted})")


def item4():
    from agg2exp_core.analysis import quality

    new_cover, fit_cover = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        n = 1150
        dice = np.array([0.9, 0.8, 0.6]) + rng.normal(size=(n, 3)) * np.array([0.01, 0.04, 0.12])
        inputs = quality.QualityInputs([f"c{i}" for i in range(n)], [1, 2, 3], rng.normal(size=(n, 3, 2)),
                                       ["f1", "f2"], dice, np.ones((n, 3)), np.array(["ref"] * 150 + ["new"] * 1000),
                                       np.array(["test"] * n, dtype=object))
        config = quality.QualityConfig(fit_dataset="ref")
        fit = quality.fit_cases(inputs, config)
        result = quality.estimate_dice(inputs, fit, config)
        inside = (dice >= result.low) & (dice <= result.high)
        new_cover.append(inside[~fit].mean(axis=0))
        fit_cover.append(inside[fit].mean(axis=0))
    print(f"  4 coverage per class (SD 0.01 / 0.04 / 0.12), nominal 0.80: new cases "
          f"{np.round(np.mean(new_cover, axis=0), 3).tolist()}, fit cases {np.round(np.mean(fit_cover, axis=0), 3).tolist()}")


def item7():
    from agg2exp_core.analysis import uncertainty

    methods = list(getattr(uncertainty, "METHODS", ("percentile",)))
    rng = np.random.default_rng(7)
    draws = {"lognormal(0, 1)": (lambda size: rng.lognormal(0, 1, size), np.exp(0.5)),
             "exponential": (lambda size: rng.exponential(1.0, size), 1.0),
             "Beta(0.3, 3)": (lambda size: rng.beta(0.3, 3.0, size), 0.3 / 3.3)}
    for name, (draw, truth) in draws.items():
        for n in (8, 32):
            values = draw((n, 2000))
            cover = {}
            for method in methods:
                config = uncertainty.BootstrapConfig(n_boot=1000, seed=1, **({"method": method} if len(methods) > 1
                                                                               else {}))
                wall = time.perf_counter()
                interval = uncertainty.bootstrap_mean(values, config)
                cover[method] = (f"{np.mean((interval.low <= truth) & (truth <= interval.high)):.3f} "
                                 f"({time.perf_counter() - wall:.2f} s)")
            print(f"  7 {name}, n = {n}, 2,000 cells, 1,000 resamples: coverage {cover}")


def item9():
    from scipy.stats import spearmanr
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(0)
    latent = rng.random(32)
    rows = rng.dirichlet(np.ones(6) * 8, size=32) + 0.05 * latent[:, None] * rng.normal(size=(32, 6))
    dice = 0.9 - 0.05 * latent + rng.normal(0, 0.02, size=32)
    scores = np.array([-IsolationForest(n_estimators=100, contamination="auto", random_state=s).fit(rows)
                       .score_samples(rows) for s in range(200)])
    single = np.array([spearmanr(s, dice)[0] for s in scores[:50]])
    averaged = np.array([spearmanr(scores[20 * g:20 * g + 20].mean(axis=0), dice)[0] for g in range(10)])
    p_single = np.array([spearmanr(s, dice)[1] for s in scores[:50]])
    print(f"  9 single seeds (50): rho {single.min():.3f} .. {single.max():.3f}, SD {single.std(ddof=1):.3f}, "
          f"p < 0.05 for {(p_single < 0.05).sum()}; averages over 20 seeds (10 sets): rho {averaged.min():.3f} .. "
          f"{averaged.max():.3f}, SD {averaged.std(ddof=1):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--items", default="1,2,4,7,9")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    import agg2exp_core

    print(f"code: {Path(agg2exp_core.__file__).parent}")
    for item in args.items.split(","):
        wall = time.perf_counter()
        globals()[f"item{item.strip()}"]()
        print(f"  (item {item}: {time.perf_counter() - wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
