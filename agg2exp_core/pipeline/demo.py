"""The built-in demo: phantom cohort -> network -> attributions -> outliers -> published cohort.

Sized for a 2-core CPU (see README): 36 phantoms of 64x48x48 voxels at 6 mm, a MONAI
UNet(16, 32, 64, 128), vanilla gradient and SmoothGrad (n = 4; the paper uses 20) over all 17 classes.
The same functions serve a real cohort; only the sizes here are the demo's.

The build publishes as it goes, so the dashboard can open at once (``make run``): the plan
of its steps (``STEPS``) lands in the store's ``build_status`` first, each step records its
progress there, and every run is published while it is computed (VG first: the first heat
map after a few cases). Cases are computed on every core by worker processes
(``demo_executor``). Every step is resumable: an interrupted build goes on where it stopped.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agg2exp_core import store
from agg2exp_core.store import queries
from agg2exp_core.analysis import outliers, suite
from agg2exp_core.analysis.drift import DriftConfig
from agg2exp_core.analysis.evaluation import CurveConfig, EvaluationConfig, FaithfulnessConfig, SensitivityConfig
from agg2exp_core.analysis.outliers import AnalysisConfig
from agg2exp_core.analysis.quality import QualityConfig
from agg2exp_core.analysis.slices import SliceConfig
from agg2exp_core.io import phantoms
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.models.train import TrainConfig, train
from agg2exp_core.pipeline import importer
from agg2exp_core.pipeline.background import build_lock
from agg2exp_core.pipeline.evaluate import evaluate_cohort
from agg2exp_core.pipeline.executors import Executor, InProcessExecutor, ProcessExecutor
from agg2exp_core.pipeline.precompute import precompute
from agg2exp_core.pipeline.retest_stage import RetestConfig, retest
from agg2exp_core.pipeline.sanity import demo_sanity_checks
from agg2exp_core.vocabulary import method_title

REPO = Path(__file__).resolve().parents[2]
PUBLISHED_CSV = REPO / "data" / "agg2exp-tsv2" / "tsv2_test_aggregated_sg_explanations_with_dice.csv"
COHORT = {"n_reference": 20, "n_test": 8, "n_external": 16, "shape": (64, 48, 48), "spacing": (6.0, 6.0, 6.0), "seed": 0}
DEMO_RUNS = (("vg", {}), ("smoothgrad", {"n_samples": 4, "sigma": 0.1, "seed": 0}))
LUNG_CLASSES = [THORAX_LABELS.index(n) for n in THORAX_LABELS if n.startswith("lung_")]
# Attribution-method evaluation for the Methods page: all five methods, three classes, two
# reference test cases; SmoothGrad as the demo runs it, budgets cut to fit 2 cores (about
# 150 CPU-seconds a case; the defaults take 325: IG 20 steps, KernelSHAP 200 coalitions,
# 3 noisy copies for sensitivity, a curve step per unit). The paper evaluates more.
EVALUATION = {"methods": ("vg", "smoothgrad", "ig", "kernelshap", "causal"),
              "classes": ("aorta", "heart", "lung_lower_lobe_left"), "max_cases": 2, "split": "test",
              "config": EvaluationConfig(faithfulness=FaithfulnessConfig(n_subsets=30), sensitivity=SensitivityConfig(n=2),
                                         curves=CurveConfig(steps=8)),
              "method_params": {"smoothgrad": dict(DEMO_RUNS[1][1]), "ig": {"steps": 8},
                                "kernelshap": {"n_coalitions": 64}}}
MAX_WORKERS = 4  # worker processes of the demo's cases (each holds torch and the model: ~0.4 GB)
# After the outliers of each run: why cases are outliers, expected Dice (fitted on the reference
# dataset), bootstrap intervals, the external cohort's drift (about half a minute per run on
# 2 cores) and the failure slices (seconds); method agreement once every run exists.
# The failure-slice search over every case: the demo's 24 held-out cases (8 reference test, 16 external) hold
# no subgroup that passes FDR over the ~330 candidates (best q 0.31), so the default, which leaves the model's
# training split out, would show an empty page; over every case "split = test" (the in-sample gap) leads.
DEMO_SLICES = SliceConfig(exclude_split=None)
EXTENSIONS = suite.SuiteConfig(drift=DriftConfig("reference"),  # quality: flags below Dice 0.8, with the ablation
                               quality=QualityConfig(fit_dataset="reference", failure_below=0.8),
                               agreement=False, slices=DEMO_SLICES)
AGREEMENT = suite.SuiteConfig(quality=None, reasons=None, bootstrap=None)
# Test-retest: SmoothGrad recomputed with one more seed on 8 cases (about a minute on 2 cores), every
# run's forests refitted with 5 seeds; cells with ICC < 0.75 are flagged on the heat map.
RETEST = RetestConfig(seeds=(1,), max_cases=8, forest_seeds=5)


def demo_checkpoint(data_dir: Path) -> Path:
    return data_dir / "demo_unet.pt"


def build_steps(methods=DEMO_RUNS, train_first: bool = False, published: bool = True) -> list[tuple[str, str]]:
    """The build's steps ``(step, title)`` in the order they run (what the dashboard says is pending)."""
    steps = [("phantoms", "phantom cohort")] + [("train", "network training")] * train_first
    for method, _ in methods:
        steps += [(method, method_title(method)), (f"analysis:{method}", f"analyses ({method_title(method)})")]
    steps += [("agreement", "method agreement"), ("retest", "test-retest reliability"),
              ("evaluation", "method evaluation"),
              ("sanity", "sanity checks")]
    return steps + [("published", "published TSV2 cohort")] * published


def demo_executor(cpus: int | None = None) -> Executor:
    """Worker processes on the cores this process may use (one torch thread each), else this process."""
    cpus = cpus or len(os.sched_getaffinity(0))
    if cpus < 2:
        return InProcessExecutor()
    workers = min(cpus, MAX_WORKERS)
    return ProcessExecutor(workers=workers, threads=max(1, cpus // workers),
                           preload=("agg2exp_core.pipeline.precompute", "agg2exp_core.pipeline.evaluate"))


def build_demo(data_dir: str | Path = "data", retrain: bool = False, methods=DEMO_RUNS,
               progress: bool = True, cohort: dict | None = None, train_config: TrainConfig | None = None,
               executor: Executor | None = None) -> dict:
    """Build (or complete) the demo store ``<data_dir>/demo.duckdb``; every step is resumable."""
    data_dir = Path(data_dir)
    started = time.time()
    manifest = data_dir / "demo" / "cohort" / "manifest.csv"
    checkpoint = demo_checkpoint(data_dir)
    db = data_dir / "demo.duckdb"
    report = {"db": db, "runs": {}}
    retrain = retrain or not checkpoint.exists()
    with build_lock(data_dir), executor or demo_executor() as executor:
        with store.open_writer(db) as con:  # published at once: readers see the plan before any result
            before = store.build_status(con)
            # an evaluation is redone unless it ended (a store of an older build: if it has one)
            evaluated = (before.state[before.step == "evaluation"] == "done").any() if len(before) else \
                store.has_method_evaluation(con)
            store.plan_build(con, build_steps(methods, retrain, PUBLISHED_CSV.exists()))
        with _step(db, "phantoms"):
            if not manifest.exists():
                phantoms.generate_cohort(manifest.parent, **(cohort or COHORT))
        if retrain:
            with _step(db, "train"):
                train(manifest, checkpoint, train_config or TrainConfig(), progress=progress)
        for method, params in methods:
            with _step(db, method):
                summary = precompute(manifest, checkpoint, db, method, params, data_dir=data_dir, progress=progress,
                                     executor=executor, build_step=method)
            with _step(db, f"analysis:{method}"):
                report["runs"][method] = {"summary": summary.line(), **_analyze_run(db, summary.run_id)}
        with _step(db, "agreement"):
            for run in report["runs"].values():
                suite.extend(db, run["run_id"], AGREEMENT)
        with _step(db, "retest"):
            for run in report["runs"].values():
                if not _retested(db, run["run_id"]):
                    retest(db, run["run_id"], RETEST, manifest, checkpoint)
        with _step(db, "evaluation"):
            if not evaluated:
                evaluate_cohort(manifest, checkpoint, db, progress=progress, executor=executor,
                                build_step="evaluation", **EVALUATION)
        with _step(db, "sanity"):
            report["sanity"] = demo_sanity_checks(db, manifest, checkpoint,
                                                  {m: r["run_id"] for m, r in report["runs"].items()})
        if PUBLISHED_CSV.exists():
            with _step(db, "published"):
                run_id = importer.import_agg2exp_csv(PUBLISHED_CSV, db, dataset="tsv2")
                published = suite.analyze_run(db, run_id, AnalysisConfig(),
                                              suite.SuiteConfig(paper=True, agreement=False))
                report["published_run"] = run_id
                report["paper_parity"] = published["parity_summary"]
    report["seconds"] = round(time.time() - started, 1)
    return report


def _analyze_run(db: Path, run_id: str) -> dict:
    """Outliers of one explanation run (fitted on the reference train split) and the story's figures."""
    result = outliers.analyze(db, run_id, AnalysisConfig(fit_dataset="reference", fit_split="train"))
    with store.connect(db, read_only=True) as con:
        auroc = outliers.pathology_auroc(con, run_id, LUNG_CLASSES, dataset="external")
    spearman = result["spearman"]
    avg = spearman[spearman.target_id == outliers.AVERAGE].spearman_rho
    extended = suite.extend(db, run_id, EXTENSIONS)
    return {"run_id": run_id, "auroc_lungs_external": auroc,
            "spearman_avg": float(avg.iloc[0]) if len(avg) else float("nan"),
            "quality": extended["quality"].get("metrics", {}), "drift": extended["drift"].tests}


def _retested(db: Path, run_id: str) -> bool:
    with store.connect(db, read_only=True) as con:
        return not queries.retest_icc(con, run_id).empty


@contextmanager
def _step(db: Path, step: str) -> Iterator[None]:
    """Mark a build step running, then done (or failed, also when interrupted), each state published."""
    _set_step(db, step, "running")
    try:
        yield
    except BaseException:
        try:
            _set_step(db, step, "failed")
        except Exception:  # noqa: BLE001 - the step's own error is the one to report
            pass
        raise
    _set_step(db, step, "done")


def _set_step(db: Path, step: str, state: str) -> None:
    with store.open_writer(db) as con:
        store.update_build_step(con, step, state)
