"""``agg2exp SUBCOMMAND`` (or ``python -m agg2exp_core``): argument parsing only.

Each subcommand parses its arguments and calls one function of the core. Bad input ends
with one line on stderr naming the file or parameter and the problem, and exit status 2;
a run with failed cases exits 1. Stages are imported when their subcommand runs, so
``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from agg2exp_core.cli.retest import add_retest
from agg2exp_core.cli.options import (add_executor, add_inputs, add_model, class_ids, comma_list,
                                       executor_from, json_object, model_spec)
from agg2exp_core.cli.slice_options import add_slice_options, slice_config
from agg2exp_core.cli.sanity import add_sanity
from agg2exp_core.cli.uncertainty import add_uncertainty
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import COMPARISON_KIND, MASS_KINDS, METHODS

METHOD_NAMES = tuple(METHODS)
EVALUATION_METRICS = "faithfulness,sensitivity,complexity,efficiency,curves"


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one stderr line naming the parameter (exit 2), like bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="agg2exp",
                           description="Agg2Exp Studio compute core: explain a 3-D segmentation model over a cohort.")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for add in (_add_phantoms, _add_train, _add_predict, _add_precompute, _add_analyze, _add_evaluate,
                _add_import, _add_demo, add_uncertainty, add_retest, add_sanity):
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    previous = _sigterm_interrupts()
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed cases are kept, rerun to resume", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_interrupts():
    """SIGTERM (a scheduler's stop, ``kill``) ends a run like Ctrl-C: the store is published and
    the case in flight is not mistaken for one that killed the process. Returns the old handler."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        return None


# ----------------------------------------------------------------------------- phantoms
def _add_phantoms(subparsers) -> None:
    p = subparsers.add_parser(
        "phantoms", help="generate the synthetic thorax-CT demo cohort",
        description="Write synthetic thorax CTs (17 labels, pleural effusion / consolidation "
                    "masks on the external set) as NIfTI plus a manifest.csv.")
    p.add_argument("--out", type=Path, default=Path("data/demo/cohort"), help="output folder")
    p.add_argument("--n-reference", type=int, default=20, help="healthy reference cases")
    p.add_argument("--n-test", type=int, default=8, help="reference cases in the test split")
    p.add_argument("--n-external", type=int, default=16, help="external (sharp kernel) cases")
    p.add_argument("--shape", type=int, nargs=3, default=[64, 48, 48], metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs="+", default=[6.0], metavar="MM",
                   help="voxel size in mm: one value or three (x y z)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_phantoms)


def _run_phantoms(args) -> int:
    from agg2exp_core.io.phantoms import generate_cohort

    spacing = tuple(args.spacing) * 3 if len(args.spacing) == 1 else tuple(args.spacing)
    print(generate_cohort(args.out, args.n_reference, args.n_test, args.n_external, tuple(args.shape),
                          spacing, args.seed))
    return 0


# ----------------------------------------------------------------------------- train and predict
def _add_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a MONAI network on the reference train split")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    p.add_argument("--network", default='{"name": "unet"}',
                   help='JSON {"name": unet|basicunet|swinunetr, "params": {...}}')
    p.add_argument("--labels", help="comma-separated label names in channel order (default: the 17 thorax labels)")
    p.add_argument("--spacing", type=float, nargs=3, help="resample to this spacing in mm (default: keep)")
    p.add_argument("--crop", type=int, nargs=3, default=(48, 48, 48))
    p.add_argument("--roi-size", type=int, nargs=3, default=(64, 48, 48), help="sliding-window size at inference")
    p.add_argument("--iterations", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    add_inputs(p, timeout=False)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from agg2exp_core.io.preprocessing import Preprocessing
    from agg2exp_core.models.train import TrainConfig, train

    config = TrainConfig(network=json_object("--network", args.network), crop_size=tuple(args.crop),
                         roi_size=tuple(args.roi_size), iterations=args.iterations, batch_size=args.batch_size,
                         learning_rate=args.lr, seed=args.seed,
                         preprocessing=Preprocessing(spacing=tuple(args.spacing) if args.spacing else None))
    if args.labels:
        config.label_names = tuple(comma_list(args.labels))
    print(train(args.manifest, args.out, config, device=args.device, cohort_root=args.cohort_root,
                allow_outside_root=args.allow_outside_root))
    return 0


def _add_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="Dice of a model on a manifest's labelled cases")
    p.add_argument("--manifest", required=True, type=Path)
    add_model(p)
    p.add_argument("--split", help="only cases of this split (default: test when the manifest has a split "
                                   "column, else every labelled case)")
    p.add_argument("--dataset", help="only cases of this dataset")
    add_inputs(p, timeout=False)
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    import numpy as np

    from agg2exp_core.models.train import evaluate_dice

    scores = evaluate_dice(args.manifest, model_spec(args), args.split, args.dataset, args.device,
                           args.cohort_root, args.allow_outside_root)
    for case_id, dice in scores.items():
        print(f"{case_id}\tmean foreground Dice {np.nanmean(dice[1:]):.3f}")
    if scores:
        print(f"mean over {len(scores)} cases: {np.nanmean([np.nanmean(d[1:]) for d in scores.values()]):.3f}")
    return 0


# ----------------------------------------------------------------------------- precompute
def _add_precompute(subparsers) -> None:
    p = subparsers.add_parser("precompute", help="attributions and RoI-importance matrices of a cohort")
    p.add_argument("--manifest", required=True, type=Path, help="cohort manifest CSV")
    add_model(p)
    p.add_argument("--db", required=True, type=Path, help="DuckDB store (published file)")
    p.add_argument("--method", default="vg", choices=METHOD_NAMES)
    p.add_argument("--params", default="{}", help='JSON of method parameters, e.g. \'{"n_samples": 8}\'')
    p.add_argument("--classes", help="comma-separated class ids to explain (default: all)")
    p.add_argument("--cases", help="comma-separated case ids (default: all)")
    p.add_argument("--data-dir", type=Path, help="where slice artefacts go (default: the store's folder)")
    p.add_argument("--save-nifti", type=Path, help="also write full-volume attributions as NIfTI here")
    p.add_argument("--retry-crashed", action="store_true",
                   help="compute again the cases during which a previous run died (held back otherwise)")
    p.add_argument("--scratch-dir", type=Path, help="stream each case's gradient attributions to a .npy here "
                   "instead of RAM (default: by themselves above 512 MiB, to the system temp folder)")
    add_inputs(p)
    add_executor(p)
    p.add_argument("--shared-data-dir", action="store_true",
                   help="--data-dir (and --save-nifti) are shared storage at the same path on every Ray node: "
                        "workers write the artefacts there instead of sending them to the driver")
    p.add_argument("--no-uncertainty", action="store_true",
                   help="skip the model's TTA / fold-ensemble uncertainty features (see 'agg2exp uncertainty')")
    p.set_defaults(func=_run_precompute)


def _run_precompute(args) -> int:
    from agg2exp_core.pipeline.precompute import precompute

    if args.shared_data_dir and args.executor != "ray":
        raise InputError("--shared-data-dir", "needs --executor ray")
    summary = precompute(args.manifest, model_spec(args), args.db, args.method, json_object("--params", args.params),
                         class_ids(args.classes), args.device, args.data_dir, args.save_nifti,
                         case_ids=comma_list(args.cases) or None, executor=executor_from(args),
                         shared_files=args.shared_data_dir, retry_crashed=args.retry_crashed,
                         scratch_dir=args.scratch_dir, case_timeout=args.case_timeout,
                         cohort_root=args.cohort_root, allow_outside_root=args.allow_outside_root,
                         uncertainty=not args.no_uncertainty)
    print(summary.line())
    return 1 if summary.failed or summary.crashed else 0


# ----------------------------------------------------------------------------- analyze
def _add_analyze(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="Isolation-Forest outliers per class and their statistics, outlier reasons, expected "
                        "Dice without labels, bootstrap intervals, method agreement, drift",
        description="Outliers of a run (or, with --paper, the paper's analysis and its Table 2 parity), then "
                    "the analyses beyond the paper; each can be switched off.")
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--run", help="run id (default: the newest run)")
    p.add_argument("--fit-dataset", help="dataset of the reference cases (default: any)")
    p.add_argument("--fit-split", default="train", help="split of the reference cases (default: train)")
    p.add_argument("--contamination", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper", action="store_true",
                   help="the paper's settings: 100 trees, contamination 'auto', absent classes dropped, sex/age "
                        "tests of any-class outliers vs inliers on the external cohort (Holm-corrected); prints "
                        "the per-label Spearman beside the paper's Table 2")
    p.add_argument("--external", help="with --paper: dataset of the sex/age tests (default: the non-fit cases)")
    p.add_argument("--drift-reference", metavar="DATASET",
                   help="test every other dataset's explanations against this one (energy distance per class, "
                        "BH q-values; cell differences; per-case drift scores)")
    p.add_argument("--drift-permutations", type=int, default=2000, help="permutations per class drift test")
    p.add_argument("--quality-reference", metavar="DATASET",
                   help="labelled reference cases of the Dice estimate (default: --fit-dataset, else any)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the intervals (0: none)")
    p.add_argument("--mass-kind", choices=list(MASS_KINDS),
                   help="mass kind the outliers, expected Dice, agreement and drift compare cases by (default: "
                        "lift, the volume-adjusted mass, and abs, the raw mass, for the expected-Dice features)")
    add_slice_options(p)
    for name, what in (("reasons", "outlier reasons (SHAP of the forests)"), ("quality", "expected Dice"),
                       ("agreement", "agreement with other runs over the same cases")):
        p.add_argument(f"--no-{name}", action="store_true", help=f"skip the {what}")
    p.set_defaults(func=_run_analyze)


def _run_analyze(args) -> int:
    from agg2exp_core.analysis.drift import DriftConfig
    from agg2exp_core.analysis.outliers import AVERAGE, AnalysisConfig
    from agg2exp_core.analysis.quality import QualityConfig
    from agg2exp_core.analysis.suite import SuiteConfig, analyze_run
    from agg2exp_core.analysis.uncertainty import BootstrapConfig

    if not 0 < args.contamination <= 0.5:
        raise InputError("--contamination", "must lie in (0, 0.5]")
    if args.bootstrap and args.bootstrap < 10:
        raise InputError("--bootstrap", "must be 0 (none) or at least 10")
    kind = args.mass_kind or COMPARISON_KIND
    quality_kind = {"kind": args.mass_kind} if args.mass_kind else {}
    suite = SuiteConfig(
        drift=DriftConfig(args.drift_reference, n_permutations=args.drift_permutations, seed=args.seed,
                          kind=kind) if args.drift_reference else None,
        quality=None if args.no_quality else QualityConfig(fit_dataset=args.quality_reference or args.fit_dataset,
                                                           seed=args.seed, **quality_kind),
        reasons=None if args.no_reasons else SuiteConfig().reasons,
        bootstrap=BootstrapConfig(n_boot=args.bootstrap, seed=args.seed) if args.bootstrap else None,
        agreement=not args.no_agreement, paper=args.paper, external=args.external, kind=kind,
        slices=slice_config(args, kind))
    result = analyze_run(args.db, args.run, AnalysisConfig(args.fit_dataset, args.fit_split or None,
                                                           args.contamination, random_state=args.seed,
                                                           kind=kind), suite)
    avg = result["spearman"][result["spearman"].target_id == AVERAGE]
    rho = f", Spearman(anomaly, Dice) averaged = {avg.spearman_rho.iloc[0]:.3f}" if len(avg) else ""
    print(f"run {result['run_id']}: {result['n_cases']} cases scored, fitted on {result['n_fit']}"
          f"{' (no reference split: fitted on all)' if result['fit_fallback'] else ''}{rho}")
    from agg2exp_core.analysis.report import summary_lines

    for line in summary_lines(result):
        print(line)
    return 0


# ----------------------------------------------------------------------------- evaluate
def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate attribution methods (faithfulness, sensitivity, complexity, "
                         "efficiency, MoRF/LeRF curves) and store method_eval / perturbation_curve")
    p.add_argument("--manifest", required=True, type=Path, help="cohort manifest CSV (case_id,image,label,...)")
    add_model(p)
    p.add_argument("--db", required=True, type=Path, help="DuckDB store to write into")
    p.add_argument("--methods", default=",".join(METHOD_NAMES), help="comma-separated (default: all)")
    p.add_argument("--classes", default="", help="class names or ids, comma-separated (default: all but background)")
    p.add_argument("--max-cases", type=int, default=3, help="evaluate at most this many cases (default 3)")
    p.add_argument("--split", default="", help="only cases of this manifest split (train/val/test)")
    p.add_argument("--metrics", default=EVALUATION_METRICS, help="comma-separated subset of metrics")
    p.add_argument("--n-subsets", type=int, default=100, help="faithfulness subsets (default 100)")
    p.add_argument("--sensitivity-n", type=int, default=3, help="noisy copies for sensitivity (default 3)")
    p.add_argument("--curve-steps", type=int, default=None, help="MoRF/LeRF steps (default: one per unit)")
    p.add_argument("--curve-value", default="logit", help="value function of the curves (logit/tp/fp/dice/softdice)")
    p.add_argument("--seed", type=int, default=0)
    add_inputs(p)
    add_executor(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from agg2exp_core.analysis.evaluation import (CurveConfig, EvaluationConfig, FaithfulnessConfig,
                                                  SensitivityConfig)
    from agg2exp_core.pipeline.evaluate import evaluate_cohort

    config = EvaluationConfig(metrics=tuple(comma_list(args.metrics)),
                              faithfulness=FaithfulnessConfig(n_subsets=args.n_subsets),
                              sensitivity=SensitivityConfig(n=args.sensitivity_n),
                              curves=CurveConfig(value=args.curve_value, steps=args.curve_steps), seed=args.seed)
    summary = evaluate_cohort(args.manifest, model_spec(args), args.db, comma_list(args.methods),
                              comma_list(args.classes), config, args.max_cases, args.split, args.device,
                              executor=executor_from(args), case_timeout=args.case_timeout,
                              cohort_root=args.cohort_root, allow_outside_root=args.allow_outside_root)
    print(summary.line())
    return 1 if summary.failed else 0


# ----------------------------------------------------------------------------- import and demo
def _add_import(subparsers) -> None:
    p = subparsers.add_parser("import-agg2exp", help="import published Agg2Exp aggregates (CSV) into a store")
    p.add_argument("--csv", required=True, type=Path, help="published *_aggregated_*_explanations_with_dice.csv")
    p.add_argument("--db", required=True, type=Path, help="DuckDB store to write")
    p.add_argument("--metadata", type=Path, help="optional CSV with case_id, sex, age")
    p.add_argument("--dataset", default="tsv2", help="dataset name for these cases")
    p.add_argument("--data-dir", type=Path, help="copy the CSV and its LICENSE here")
    p.set_defaults(func=_run_import)


def _run_import(args) -> int:
    from agg2exp_core.pipeline.importer import import_agg2exp_csv

    print(import_agg2exp_csv(args.csv, args.db, args.metadata, args.dataset, args.data_dir))
    return 0


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser("demo", help="build the demo store (phantoms, network, attributions, outliers)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--retrain", action="store_true", help="train the network even if data/demo_unet.pt exists")
    p.add_argument("--background", action="store_true",
                   help="start the build as a process of its own (log: DATA_DIR/demo-build.log) and return at once; "
                        "nothing to do when the store is complete or a build is running")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from agg2exp_core.pipeline.background import demo_complete, demo_db, start_detached

    if args.background:
        print(start_detached(args.data_dir, args.retrain))
        return 0
    if demo_complete(args.data_dir) and not args.retrain:
        print(f"demo store {demo_db(args.data_dir)} is complete (make clean-demo builds it again)")
        return 0
    from agg2exp_core.pipeline.demo import build_demo

    report = build_demo(args.data_dir, args.retrain)
    for method, run in report["runs"].items():
        print(f"{method}: {run['summary']}; AUROC(lung anomaly -> pathology, external) = "
              f"{run['auroc_lungs_external']:.3f}; Spearman(anomaly, Dice) = {run['spearman_avg']:.3f}")
        external = run["quality"].get("external", {})
        if external:
            print(f"  expected Dice on the external cases: Spearman {external['spearman_case_mean']:.3f}, "
                  f"80 % intervals cover {100 * external['coverage_class']:.0f} %")
        drifted = run["drift"][run["drift"].q_value < 0.05]
        print(f"  drift of the external cohort: {len(drifted)} of {len(run['drift'])} classes at q < 0.05")
    for line in report.get("sanity", {}).values():
        print(f"sanity: {line}")
    if "paper_parity" in report:
        parity = report["paper_parity"]
        print(f"published TSV2 with the paper's settings: averages' p = {parity['average_p']:.4f} (paper 0.0024), "
              f"per-label rho rank agreement with Table 2 = {parity['rho_rank_agreement']:.2f}")
    print(f"demo store {report['db']} built in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
