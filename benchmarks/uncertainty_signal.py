"""Which uncertainty features carry signal: Spearman of each with the true Dice per (case, class).

    OMP_NUM_THREADS=1 python benchmarks/uncertainty_signal.py --store /tmp/demo-copy.duckdb

Backfills ``case_uncertainty`` on a COPY of the demo store (``compute_uncertainty``: the path the
quality model's backfill uses), then, per dataset, the Spearman correlation of every feature with the
true Dice over the (case, class) pairs of the foreground classes, and the failures (Dice < 0.8).
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from agg2exp_core import store
from agg2exp_core.models import load_model
from agg2exp_core.pipeline.uncertainty_stage import compute_uncertainty
from agg2exp_core.store.queries.uncertainty import uncertainty_features

FAILURE_BELOW = 0.8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--store", type=Path, required=True, help="where the copy of the demo store goes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.store.exists():
        shutil.copy(args.data / "demo.duckdb", args.store)
    model = load_model(args.data / "demo_unet.pt", device="cpu")
    started = time.process_time()
    summary = compute_uncertainty(args.data / "demo" / "cohort" / "manifest.csv", model, args.store, progress=False)
    print(summary.line(), f"({time.process_time() - started:.0f} CPU s)")
    con = store.open_reader(args.store)
    features = uncertainty_features(con, model.checkpoint_sha256)
    dice = con.execute("""SELECT d.case_id, d.class_id, d.dice, c.dataset, r.name FROM dice d
                          JOIN cases c USING (case_id) JOIN rois r ON r.roi_id = d.class_id
                          WHERE d.model_sha256 = ? AND r.name <> 'background'""",
                       [model.checkpoint_sha256]).df()
    table = dice.merge(features, on=["case_id", "class_id"], how="inner")
    names = [c for c in features.columns if c not in ("case_id", "class_id")]
    for dataset, part in table.groupby("dataset"):
        fails = part[part.dice < FAILURE_BELOW]
        print(f"\n{dataset}: {len(part)} (case, class) pairs, {part.case_id.nunique()} cases; Dice < {FAILURE_BELOW}: "
              f"{len(fails)} pairs in {fails.case_id.nunique()} cases ({', '.join(sorted(fails.name.unique()))})")
        by_case = part.groupby("case_id")[names + ["dice"]].mean()
        rows = [(n, *spearmanr(part[n], part.dice, nan_policy="omit"), within_class(part, n),
                 spearmanr(by_case[n], by_case.dice, nan_policy="omit")[0], int(part[n].notna().sum())) for n in names]
        print(pd.DataFrame(rows, columns=["feature", "spearman", "p", "within_class", "per_case_mean", "n"]).sort_values(
            "spearman", key=abs, ascending=False).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def within_class(part: pd.DataFrame, feature: str) -> float:
    """Mean over classes of the Spearman within the class (class identity alone explains none of it)."""
    values = [spearmanr(g[feature], g.dice, nan_policy="omit")[0] for _, g in part.groupby("name")
              if g[feature].nunique() > 1 and g.dice.nunique() > 1]
    return float(pd.Series(values).mean())


if __name__ == "__main__":
    main()
