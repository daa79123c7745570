"""``agg2exp uncertainty``: the model's own uncertainty features for a store whose cases are done.

``precompute`` computes them with each case; this subcommand backfills a store built without them
(or by an older version), once per model and case, resumable.
"""
from __future__ import annotations

from pathlib import Path

from agg2exp_core.cli.options import add_inputs, add_model, comma_list, model_spec


def add_uncertainty(subparsers) -> None:
    p = subparsers.add_parser(
        "uncertainty", help="the model's TTA / fold-ensemble uncertainty per case and class (case_uncertainty)",
        description="Test-time augmentation (flips only along the axes the model allows, intensity, noise, "
                    "translations) and nnU-Net fold ensembles: agreement, entropy, margin, volume and connected "
                    "components per case and class, for the cases of a manifest the store lacks for this model.")
    p.add_argument("--manifest", required=True, type=Path, help="cohort manifest CSV")
    add_model(p)
    p.add_argument("--db", required=True, type=Path, help="DuckDB store (published file)")
    p.add_argument("--cases", help="comma-separated case ids (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise perturbation (default 0)")
    add_inputs(p, timeout=False)
    p.set_defaults(func=run_uncertainty)


def run_uncertainty(args) -> int:
    from agg2exp_core.models.uncertainty import TTASpec
    from agg2exp_core.pipeline.uncertainty_stage import compute_uncertainty

    summary = compute_uncertainty(args.manifest, model_spec(args), args.db, TTASpec(seed=args.seed), args.device,
                                  case_ids=comma_list(args.cases) or None, cohort_root=args.cohort_root,
                                  allow_outside_root=args.allow_outside_root)
    print(summary.line())
    return 1 if summary.failed else 0
