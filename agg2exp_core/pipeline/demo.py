"""The built-in demo: phantom cohort -> network -> attributions -> outliers -> published cohort.

Sized for a 2-core CPU (see README): 36 phantoms of 64x48x48 voxels at 6 mm, a MONAI
UNet(16, 32, 64, 128), vanilla gradient and SmoothGrad (n = 4; the paper uses 20) over all 17 classes.
The same functions serve a real cohort; only the sizes here are the demo's.
"""
from __future__ import annotations

import time
from pathlib import Path

from agg2exp_core import store
from agg2exp_core.analysis import outliers, suite
from agg2exp_core.analysis.drift import DriftConfig
from agg2exp_core.analysis.evaluation import EvaluationConfig, FaithfulnessConfig
from agg2exp_core.analysis.outliers import AnalysisConfig
from agg2exp_core.analysis.quality import QualityConfig
from agg2exp_core.io import phantoms
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.models.train import TrainConfig, train
from agg2exp_core.pipeline import importer
from agg2exp_core.pipeline.evaluate import evaluate_cohort
from agg2exp_core.pipeline.precompute import precompute

REPO = Path(__file__).resolve().parents[2]
PUBLISHED_CSV = REPO / "data" / "agg2exp-tsv2" / "tsv2_test_aggregated_sg_explanations_with_dice.csv"
COHORT = {"n_reference": 20, "n_test": 8, "n_external": 16, "shape": (64, 48, 48), "spacing": (6.0, 6.0, 6.0), "seed": 0}
DEMO_RUNS = (("vg", {}), ("smoothgrad", {"n_samples": 4, "sigma": 0.1, "seed": 0}))
LUNG_CLASSES = [THORAX_LABELS.index(n) for n in THORAX_LABELS if n.startswith("lung_")]
# Attribution-method evaluation for the Methods page: all five methods, three classes,
# two reference test cases (a few minutes on 2 cores; the paper evaluates more).
EVALUATION = {"methods": ("vg", "smoothgrad", "ig", "kernelshap", "causal"),
              "classes": ("aorta", "heart", "lung_lower_lobe_left"), "max_cases": 2, "split": "test",
              "config": EvaluationConfig(faithfulness=FaithfulnessConfig(n_subsets=30))}
# After the outliers of each run: why cases are outliers, expected Dice (fitted on the reference
# dataset), bootstrap intervals and the external cohort's drift (about half a minute per run on
# 2 cores); method agreement once every run exists.
EXTENSIONS = suite.SuiteConfig(drift=DriftConfig("reference"), quality=QualityConfig(fit_dataset="reference"),
                               agreement=False)


def demo_checkpoint(data_dir: Path) -> Path:
    return data_dir / "demo_unet.pt"


def build_demo(data_dir: str | Path = "data", retrain: bool = False, methods=DEMO_RUNS,
               progress: bool = True, cohort: dict | None = None, train_config: TrainConfig | None = None) -> dict:
    """Build (or complete) the demo store ``<data_dir>/demo.duckdb``; every step is resumable."""
    data_dir = Path(data_dir)
    started = time.time()
    manifest = data_dir / "demo" / "cohort" / "manifest.csv"
    if not manifest.exists():
        phantoms.generate_cohort(manifest.parent, **(cohort or COHORT))
    checkpoint = demo_checkpoint(data_dir)
    if retrain or not checkpoint.exists():
        train(manifest, checkpoint, train_config or TrainConfig(), progress=progress)
    db = data_dir / "demo.duckdb"
    report = {"db": db, "runs": {}}
    for method, params in methods:
        summary = precompute(manifest, checkpoint, db, method, params, data_dir=data_dir, progress=progress)
        result = outliers.analyze(db, summary.run_id, AnalysisConfig(fit_dataset="reference", fit_split="train"))
        with store.connect(db, read_only=True) as con:
            auroc = outliers.pathology_auroc(con, summary.run_id, LUNG_CLASSES, dataset="external")
        spearman = result["spearman"]
        avg = spearman[spearman.target_id == outliers.AVERAGE].spearman_rho
        extended = suite.extend(db, summary.run_id, EXTENSIONS)
        report["runs"][method] = {"run_id": summary.run_id, "summary": summary.line(), "auroc_lungs_external": auroc,
                                  "spearman_avg": float(avg.iloc[0]) if len(avg) else float("nan"),
                                  "quality": extended["quality"].get("metrics", {}),
                                  "drift": extended["drift"].tests}
    for run in report["runs"].values():
        suite.extend(db, run["run_id"], suite.SuiteConfig(quality=None, reasons=None, bootstrap=None))
    with store.connect(db, read_only=True) as con:
        evaluated = store.has_method_evaluation(con)
    if not evaluated:
        evaluate_cohort(manifest, checkpoint, db, progress=progress, **EVALUATION)
    if PUBLISHED_CSV.exists():
        run_id = importer.import_agg2exp_csv(PUBLISHED_CSV, db, dataset="tsv2")
        published = suite.analyze_run(db, run_id, AnalysisConfig(), suite.SuiteConfig(paper=True, agreement=False))
        report["published_run"] = run_id
        report["paper_parity"] = published["parity_summary"]
    report["seconds"] = round(time.time() - started, 1)
    return report
