"""Expected Dice on the demo's external cases, fitted on the reference dataset only: the ablation
of the feature groups (Spearman per case, MAE vs the class means, AUROC for Dice < 0.8, AURC vs
baselines, 80 % interval coverage overall and per class).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/quality_model.py [STORE]   # default: a copy of data/demo.duckdb

Works on a copy: the store given is copied to a temporary folder first. Uncertainty features are
used when the copy's case_uncertainty has rows for the run's model (backfill them first).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from agg2exp_core import store
from agg2exp_core.analysis import quality

METRICS = ["spearman_case_mean", "mae", "mae_constant", "auroc", "aurc", "coverage_class", "coverage_worst_class"]


def main(source: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="quality-"))
    path = folder / "store.duckdb"
    shutil.copy(source, path)
    if (Path(source).parent / "artifacts").is_dir():          # the slice artefacts: predicted volumes
        (folder / "artifacts").symlink_to(Path(source).resolve().parent / "artifacts")
    con = store.open_writable(path)
    store.init_schema(con)                 # the tables this round added
    runs = con.execute("SELECT run_id FROM runs WHERE source = 'precompute' ORDER BY created_at").fetchall()
    for (run_id,) in runs:
        report = quality.analyze_quality(con, run_id, quality.QualityConfig(fit_dataset="reference"))
        print(f"\n== {run_id}: fit on {report['n_fit']} cases, features {report['features']}")
        table = pd.DataFrame({name: {m: by_scope.get("external", {}).get(m) for m in METRICS}
                              for name, by_scope in report["ablation"].items()}).T
        print(table.round(3).to_string())
        print("per-class coverage (external):",
              {k: round(v, 2) for k, v in report["class_coverage"]["external"].items()})
    shutil.rmtree(folder)


def tsv2(source: str, run_id: str = "smoothgrad-669cc71962", repeats: int = 20) -> None:
    """TSV2 (aggregates only: explanation features): repeated 5-fold against the class-mean baseline."""
    con = store.open_reader(source)
    inputs = quality.build_inputs(con, run_id, quality.QualityConfig())
    runs = quality.repeated_kfold(inputs, folds=5, repeats=repeats)
    print(f"\n== TSV2 {run_id}: {len(inputs.case_ids)} cases, features {inputs.names}")
    print(runs.drop(columns="repeat").agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    store_path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1] / "data" / "demo.duckdb")
    main(store_path)
    tsv2(store_path)
