"""Figures of issue 20, items 3, 6 and 8 (run once; about two CPU minutes):

- noise-map agreement: two independent pure-noise maps per case, Spearman of their rows on raw
  mass and on the lift, and the volume-only null the agreement analysis reports beside it;
- drift of noise maps under a change of field of view (background share 0.5 -> 0.8): raw mass,
  lift and the volume-share control row;
- coverage of the causal method's 95 % intervals (a linear model with known effects; donors drawn
  from a pool of 200 and from a pool of 20 = n_samples, as precompute draws them);
- AOPC of exact attributions of an additive model against the random and volume rankings.

    OMP_NUM_THREADS=1 python benchmarks/volume_and_causal.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core" / "analysis"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "core" / "attribution"))

from agg2exp_core import store  # noqa: E402
from agg2exp_core.analysis import agreement, drift  # noqa: E402
from agg2exp_core.analysis import evaluation as ev  # noqa: E402
from agg2exp_core.attribution.causal import causal_run, effect_interval, summed_effects  # noqa: E402
from agg2exp_core.attribution.partitions import cube_partition  # noqa: E402
from agg2exp_core.vocabulary import VOLUME_TARGET  # noqa: E402
from test_causal_coverage import SHAPE, OffsetLinear  # noqa: E402
from test_volume_lift import _noise_store, case_shares, label_map, noise_matrices  # noqa: E402


def noise_agreement(n_cases: int = 100) -> None:
    rng = np.random.default_rng(0)
    cubes = {k: ([], []) for k in ("abs", "lift")}
    shares = []
    for _ in range(n_cases):
        s = case_shares(rng)
        labels = label_map(s)
        a, b = noise_matrices(rng, labels), noise_matrices(rng, labels)
        shares.append(a["volume"])
        for kind in cubes:
            cubes[kind][0].append(a[kind]), cubes[kind][1].append(b[kind])
    for kind, (a, b) in cubes.items():
        row = agreement.agreement(np.stack(a), np.stack(b), [1]).set_index("target_id").loc[1]
        null_mean, null_high = agreement.volume_null(np.stack(shares), kind)
        print(f"noise-map agreement {kind:4s}: Spearman {row.spearman_mean:+.3f} "
              f"[{row.spearman_low:+.3f}, {row.spearman_high:+.3f}] over {n_cases} cases; "
              f"volume-only null mean {null_mean:+.3f}, 95th pct {null_high:+.3f}")


def noise_drift() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for background in (0.5, 0.8):
            db = _noise_store(Path(folder) / str(background), background_new=background, n=20)
            with store.open_writer(db) as con:
                drift.drift_analysis(con, "run", drift.DriftConfig("ref", n_permutations=999))
                tests = con.execute("SELECT target_id, p_value, p_value_raw FROM drift ORDER BY 1").df()
            control = tests[tests.target_id == VOLUME_TARGET]
            classes = tests[tests.target_id != VOLUME_TARGET]
            print(f"noise drift, background share 0.5 -> {background}: raw p {classes.p_value_raw.round(3).tolist()}, "
                  f"lift p {classes.p_value.round(3).tolist()}, volume control p {control.p_value.round(3).tolist()}")


def causal_coverage(pool_size: int, repetitions: int = 300) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    w, image = torch.rand(SHAPE, generator=g) + 0.5, torch.rand(1, *SHAPE, generator=g)
    partition = np.zeros(SHAPE, dtype=int)
    partition[2:] = 1
    levels = np.clip(np.random.default_rng(0).gamma(2.0, 0.15, size=pool_size), 0, 0.95)
    donors = [torch.full((1, *SHAPE), float(a)) + 0.05 * torch.rand(1, *SHAPE, generator=g) for a in levels]
    pool = torch.stack([d[0] for d in donors]).numpy()
    truth = np.array([(w.numpy() * (image[0].numpy() - pool.mean(0)))[partition == r].sum() for r in (0, 1)])
    covered, covered_z, summed, summed_quadrature, donors_used = [], [], [], [], []
    for rep in range(repetitions):
        result = causal_run(OffsetLinear(w), image, [1], partition=partition, roi_size=None, donor="images",
                            donors=donors, seed=rep)
        low, high = effect_interval(result.ate[0], result.se[0], result.n)
        covered.append((low <= truth) & (truth <= high))
        covered_z.append(np.abs(result.ate[0] - truth) <= 1.96 * result.se[0])
        ate, se, n = summed_effects(result, np.array([0, 1]))
        low, high = effect_interval(ate, se, n)
        summed.append(low[0] <= truth.sum() <= high[0])
        summed_quadrature.append(abs(ate[0] - truth.sum()) <= 1.96 * np.sqrt((result.se[0] ** 2).sum()))
        donors_used.append(result.n.mean())
    print(f"causal 95 % coverage, pool {pool_size}: ATE ± t·SE {np.mean(covered):.3f} (± 1.96 SE "
          f"{np.mean(covered_z):.3f}), sum of 2 regions: per-donor SE ± t {np.mean(summed):.3f}, quadrature ± 1.96 "
          f"{np.mean(summed_quadrature):.3f}; mean donors {np.mean(donors_used):.1f}; {repetitions} repetitions, "
          f"MC error ±{np.sqrt(0.95 * 0.05 / repetitions):.3f}")


def evaluation_baselines() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    shape = (8, 6, 4)
    w, image = torch.rand(shape, generator=g) * 2 - 0.5, torch.rand(1, *shape, generator=g)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return torch.cat([torch.full_like(x, -100.0), w * x], dim=1)

    def explain(model, x, classes=None, method="exact", **_):
        if method == "noise":
            return torch.randn((1, *shape), generator=torch.Generator().manual_seed(1))
        return (w * x[0])[None]

    part = cube_partition(shape, (4, 3, 1))
    config = ev.EvaluationConfig(metrics=("curves",), curves=ev.CurveConfig(partition=part))
    metrics, _ = ev.evaluate_case(Linear(), image, {"exact": {}, "noise": {}}, [1], config, explain=explain)
    wide = metrics.pivot_table(index="method", columns="metric", values="value")
    print("evaluation on an additive model (AOPC; method / random ranking / volume ranking):")
    for method in wide.index:
        r = wide.loc[method]
        print(f"  {method:6s} AOPC {r.aopc:.3f} / {r.aopc_random:.3f} / {r.aopc_volume:.3f}; "
              f"ABPC {r.abpc:.3f} / {r.abpc_random:.3f} / {r.abpc_volume:.3f}; nAOPC {r.naopc:.3f}")


if __name__ == "__main__":
    noise_agreement()
    noise_drift()
    causal_coverage(200)
    causal_coverage(20)
    evaluation_baselines()
