"""Planted known answers: a shortcut network, its control, and the tool run on both (issue #25 b).

``train_known_answer_models`` trains the two networks with the project's own training
(``models.train``) on the shortcut cohort (``io.phantoms.shortcut``): the shortcut network on
``shortcut_train`` (every case with an effusion carries the marker), the control on
``control_train`` (the same anatomy, no marker). ``run_known_answers`` explains the test cases
(``marked`` and ``unmarked``) with both networks through ``precompute`` and measures the criteria
of ``analysis.known_answers``. ``benchmarks/known_answers.py`` prints them side by side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from agg2exp_core import store
from agg2exp_core.analysis import known_answers as criteria
from agg2exp_core.analysis.drift import DriftConfig, drift_analysis
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.io.phantoms.shortcut import SHAPE, SHORTCUT_LABELS
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models.sources import load_model
from agg2exp_core.models.train import TrainConfig, evaluate_dice, train
from agg2exp_core.pipeline.precompute import precompute

MODELS = ("shortcut", "control")
# Small enough for a few CPU minutes per network (measured in the note), about 1 MB per checkpoint.
SMALL_UNET = {"name": "unet", "params": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1}}


@dataclass(frozen=True)
class KnownAnswerConfig:
    iterations: int = 400
    network: dict = field(default_factory=lambda: dict(SMALL_UNET))
    seed: int = 0
    method: str = "vg"                     # the precompute run of criteria 1 (comparison) and 2 (drift)
    n_permutations: int = 2000
    region_methods: tuple[str, ...] = ("kernelshap", "causal")
    sanity_cases: int = 2                  # marked cases of the sanity checks (criterion 3), per model
    sanity_steps: int = 2                  # cascading depths before the full randomisation


def train_config(model: str, config: KnownAnswerConfig) -> TrainConfig:
    """The whole phantom is one crop, so the marker is in every training example."""
    return TrainConfig(network=config.network, label_names=SHORTCUT_LABELS, preprocessing=Preprocessing(spacing=None),
                       crop_size=SHAPE, roi_size=SHAPE, iterations=config.iterations, batch_size=2,
                       dataset=f"{model}_train", split="train", seed=config.seed)


def train_known_answer_models(manifest: str | Path, out_dir: str | Path, config: KnownAnswerConfig = KnownAnswerConfig(),
                              progress: bool = False) -> dict[str, dict]:
    """Train both networks; returns ``{model: {"path", "seconds", "bytes"}}``."""
    out = {}
    for model in MODELS:
        path = Path(out_dir) / f"known_answers_{model}_unet.pt"
        started = time.time()
        train(manifest, path, train_config(model, config), device="cpu", progress=progress)
        out[model] = {"path": path, "seconds": time.time() - started, "bytes": path.stat().st_size}
    return out


def test_case_ids(manifest: str | Path) -> list[str]:
    frame = read_manifest(manifest)
    return frame[frame.dataset.isin(["marked", "unmarked"])].case_id.tolist()


def effusion_dice(manifest: str | Path, checkpoints: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Mean Dice of the effusion class per model and test dataset (does the shortcut show in Dice?)."""
    out = {}
    for model, path in checkpoints.items():
        out[model] = {}
        for dataset in ("marked", "unmarked"):
            scores = evaluate_dice(manifest, path, split="test", dataset=dataset, device="cpu")
            values = [s[SHORTCUT_LABELS.index("pleural_effusion")] for s in scores.values()]
            out[model][dataset] = float(sum(values) / len(values))
    return out


def run_known_answers(manifest: str | Path, checkpoints: dict[str, Path], db: str | Path,
                      config: KnownAnswerConfig = KnownAnswerConfig(), progress: bool = False) -> dict:
    """Explain the marked and unmarked test cases with both networks and measure every criterion."""
    cases = test_case_ids(manifest)
    runs = {}
    for model, path in checkpoints.items():
        runs[model] = precompute(manifest, path, db, method=config.method, device="cpu", progress=progress,
                                 case_ids=cases, case_timeout=0).run_id
    drift_config = DriftConfig(reference="unmarked", n_permutations=config.n_permutations, seed=config.seed)
    with store.open_writer(db) as con:
        result = {"runs": runs,
                  "drift": {model: criteria.effusion_drift(con, drift_analysis(con, run_id, drift_config))
                            for model, run_id in runs.items()},
                  "comparison": criteria.marker_comparison(con, runs["shortcut"], runs["control"], "marked",
                                                           config.n_permutations, config.seed)}
    result["ranking"] = region_rankings(manifest, checkpoints, config)
    result["sanity"] = sanity_summaries(manifest, checkpoints, config)
    return result


def region_rankings(manifest: str | Path, checkpoints: dict[str, Path], config: KnownAnswerConfig) -> dict:
    """Per model and region method: the marker's rank among the sources on each marked case."""
    frame = read_manifest(manifest)
    rows = frame[frame.dataset == "marked"].to_dict("records")
    out = {}
    for model, path in checkpoints.items():
        segmenter = load_model(path, device="cpu")
        for method in config.region_methods:
            out[(model, method)] = criteria.marker_ranks(segmenter, rows, method, config.seed)
    return out


def sanity_summaries(manifest: str | Path, checkpoints: dict[str, Path], config: KnownAnswerConfig) -> dict:
    """Criterion 3: the sanity checks of ``config.method`` for the effusion class, per model."""
    frame = read_manifest(manifest)
    rows = frame[frame.dataset == "marked"].head(config.sanity_cases).to_dict("records")
    return {model: criteria.sanity_summary(load_model(path, device="cpu"), rows, config.method, config.sanity_steps,
                                           config.seed)
            for model, path in checkpoints.items()}
