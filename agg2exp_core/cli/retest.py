"""``agg2exp retest``: test-retest ICC of a run's matrix cells (SmoothGrad seeds) and outliers (forest seeds)."""
from __future__ import annotations

from pathlib import Path

from agg2exp_core.cli.options import add_model, comma_list, model_spec
from agg2exp_core.errors import InputError


def add_retest(subparsers) -> None:
    p = subparsers.add_parser(
        "retest", help="test-retest reliability (ICC) of a run's cells across SmoothGrad and Isolation-Forest seeds",
        description="Recompute a SmoothGrad run's matrices on some of its cases with other seeds (needs --manifest "
                    "and --model) and refit its outlier forests with other seeds; store the ICC(2,1) of every cell "
                    "in retest_icc (cells below 0.75 are flagged on the dashboard's heat map).")
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--manifest", type=Path, help="the run's cohort manifest (for the SmoothGrad seeds)")
    p.add_argument("--seeds", default="1", help="SmoothGrad seeds besides the run's own, comma-separated (default 1)")
    p.add_argument("--max-cases", type=int, default=8, help="cases recomputed per seed (default 8)")
    p.add_argument("--forest-seeds", type=int, default=5, help="Isolation-Forest seeds (0: none; default 5)")
    add_model(p, required=False)
    p.set_defaults(func=run_retest)


def run_retest(args) -> int:
    from agg2exp_core.analysis.retest import unreliable_share
    from agg2exp_core.pipeline.retest_stage import RetestConfig, retest

    if (args.manifest is None) != (args.model is None):
        raise InputError("--manifest", "give --manifest and --model together (or neither: forest seeds only)")
    try:
        seeds = tuple(int(s) for s in comma_list(args.seeds))
    except ValueError:
        raise InputError("--seeds", f"not a comma-separated list of integers: {args.seeds!r}") from None
    config = RetestConfig(seeds=seeds, max_cases=args.max_cases, forest_seeds=args.forest_seeds)
    table = retest(args.db, args.run, config, args.manifest, model_spec(args) if args.model else None)
    for (factor, kind), rows in table.groupby(["factor", "kind"]):
        print(f"{factor} / {kind}: {rows.icc.notna().sum()} cells, median ICC {rows.icc.median():.3f}, "
              f"{unreliable_share(rows):.0%} below 0.75")
    return 0
