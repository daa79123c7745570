"""``agg2exp sanity``: cascading model-parameter randomisation and the random-logit and edge controls of a
stored run (``pipeline.sanity.sanity_run``), written to ``sanity_check``."""
from __future__ import annotations

from pathlib import Path

from agg2exp_core.cli.options import add_inputs, add_model, class_ids, comma_list, model_spec
from agg2exp_core.errors import InputError


def add_sanity(subparsers) -> None:
    p = subparsers.add_parser(
        "sanity", help="sanity checks of a run's method and model: cascading randomisation, random logit, edges",
        description="Re-initialise the model's layers from the output towards the input (a copy; the trained "
                    "model is untouched) and compare each step's attributions with the trained model's "
                    "(Spearman of |a| and of a, SSIM of the central slice, rank correlation of the Agg2Exp "
                    "rows), against the similarity of two unrelated classes; plus the random-logit and "
                    "Sobel edge-detector controls. Replaces the run's rows of sanity_check.")
    p.add_argument("--db", required=True, type=Path, help="DuckDB store holding the run")
    p.add_argument("--run", required=True, help="run id (agg2exp computed it: precompute)")
    p.add_argument("--manifest", required=True, type=Path, help="the run's cohort manifest (scans of the cases)")
    add_model(p)
    p.add_argument("--classes", help="comma-separated class ids (default: the run's classes)")
    p.add_argument("--cases", help="comma-separated case ids (default: the run's first case)")
    p.add_argument("--steps", type=int, default=3,
                   help="cascading depths before the fully randomised model, evenly from the output layer "
                        "(default 3; each costs one explanation of the classes, 0: only the full randomisation)")
    p.add_argument("--keep-normalisation", action="store_true",
                   help="leave normalisation layers trained (default: re-initialised as steps of their own)")
    p.add_argument("--max-voxels", type=int, default=200_000, help="voxel sample of the Spearman correlations")
    p.add_argument("--seed", type=int, default=0)
    add_inputs(p, timeout=False)
    p.set_defaults(func=run_sanity)


def run_sanity(args) -> int:
    from agg2exp_core.analysis.sanity import SanityConfig
    from agg2exp_core.pipeline.sanity import sanity_run

    if args.steps < 0:
        raise InputError("--steps", "must be 0 or more")
    if args.max_voxels < 100:
        raise InputError("--max-voxels", "must be at least 100")
    config = SanityConfig(steps=args.steps, seed=args.seed, max_voxels=args.max_voxels,
                          normalisation="keep" if args.keep_normalisation else "reset")
    summary = sanity_run(args.db, args.run, args.manifest, model_spec(args), class_ids(args.classes),
                         comma_list(args.cases) or None, config, args.device, args.cohort_root,
                         args.allow_outside_root)
    print(summary.line())
    return 0
