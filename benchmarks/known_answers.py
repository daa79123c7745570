"""Planted known answers (issue #25 b): does the tool find the shortcut that is known to be there?

    OMP_NUM_THREADS=1 python benchmarks/known_answers.py [--n-test 12] [--models data] [--retrain]

Builds the known-answer cohort (``io.phantoms.shortcut``: test cases with an effusion, with and
without the marker), takes the committed shortcut and control networks
(``data/known_answers_{shortcut,control}_unet.pt``, or trains them again with ``--retrain``), runs
``precompute`` (vanilla gradient) on the marked and unmarked cases with both, the drift analysis,
the comparison test, KernelSHAP and the causal method on the marked cases, and the sanity checks,
and prints every criterion measured, shortcut and control side by side, with met / NOT MET.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # this tree's agg2exp_core, not the installed one

from agg2exp_core.io.phantoms.shortcut import generate_shortcut_cohort  # noqa: E402
from agg2exp_core.pipeline import known_answers as ka  # noqa: E402


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def print_report(result: dict, dice: dict | None = None, seconds: float | None = None) -> None:
    c = result["comparison"]
    print(f"runs: {result['runs']}")
    if dice:
        print("\neffusion Dice          shortcut   control")
        for dataset in ("marked", "unmarked"):
            print(f"  {dataset:20s} {dice['shortcut'][dataset]:8.3f}  {dice['control'][dataset]:8.3f}")
    print(f"\n(1a) marker RoI mass for the effusion class, marked cases (n={c['n_cases']}), raw |mass|, "
          f"Welch permutation test, BH over {c['n_cells']} cells")
    print(f"     shortcut {c['mean_shortcut']:.4g}   control {c['mean_control']:.4g}   difference {c['difference']:+.4g}"
          f"   p {c['p_value']:.3g}   q {c['q_value']:.3g}   -> {verdict(c['met'])}")
    print("\n(1b) marker rank among the sources (lift = |region value|), effusion class, marked cases")
    for method in sorted({m for _, m in result["ranking"]}):
        cells = []
        for model in ka.MODELS:
            r = result["ranking"][(model, method)]
            cells.append(f"{model}: first on {r['n_first']}/{r['n_cases']} (ranks {r['ranks']}; "
                         f"leaders {sorted(set(r['leaders']))})")
        met = result["ranking"][("shortcut", method)]["met"]
        print(f"     {method:10s} " + "   ".join(cells) + f"   -> {verdict(met)} (shortcut first on every case)")
    print("\n(2) drift marked vs unmarked (reference), effusion class, energy test on the lift, BH over classes")
    d = result["drift"]
    for model in ka.MODELS:
        print(f"     {model:8s} statistic {d[model]['statistic']:.4g}  p {d[model]['p_value']:.3g}  "
              f"q {d[model]['q_value']:.3g}  n_ref {d[model]['n_ref']}  n_new {d[model]['n_new']}  "
              f"detected {d[model]['detected']}")
    print(f"     -> {verdict(d['shortcut']['detected'] and not d['control']['detected'])} "
          "(detected with the shortcut, not with the control)")
    print("\n(3) sanity checks (vanilla gradient, effusion class): full randomisation vs unrelated-class baseline")
    for model in ka.MODELS:
        s = result["sanity"][model]
        metrics = "  ".join(f"{m} {v['value']:.3f}<{v['baseline']:.3f}? {v['passed']}/{v['n']}"
                            for m, v in s["full_randomisation"].items())
        print(f"     {model:8s} {metrics}  edge {s['edge_passed']}/{s['n_cases']}  "
              f"random logit {s['random_logit_passed']}/{s['n_logit']}  -> {verdict(s['met'])}")
    if seconds is not None:
        print(f"\nwall time {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=12, help="marked and unmarked test cases each")
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--models", default=str(ROOT / "data"), help="folder of the two checkpoints")
    parser.add_argument("--retrain", action="store_true", help="train both networks again (into --models)")
    parser.add_argument("--work", default=None, help="folder for the cohort and the store (default: temporary)")
    args = parser.parse_args()
    config = ka.KnownAnswerConfig()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        started = time.time()
        manifest = generate_shortcut_cohort(work / "cohort", n_train=args.n_train, n_test=args.n_test)
        if args.retrain:
            trained = ka.train_known_answer_models(manifest, args.models, config, progress=True)
            for model, t in trained.items():
                print(f"trained {model}: {t['seconds']:.0f} s, {t['bytes'] / 1e6:.2f} MB")
        checkpoints = {m: Path(args.models) / f"known_answers_{m}_unet.pt" for m in ka.MODELS}
        dice = ka.effusion_dice(manifest, checkpoints)
        result = ka.run_known_answers(manifest, checkpoints, work / "known_answers.duckdb", config)
        print_report(result, dice, time.time() - started)


if __name__ == "__main__":
    main()
