"""The planted known answer on a small instance (issue #25 b): the committed shortcut and control
networks, 6 marked and 6 unmarked phantoms, the whole tool (precompute, drift, comparison, KernelSHAP
and the causal method over regions, sanity checks). ``benchmarks/known_answers.py`` is the full run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agg2exp_core.io.phantoms.shortcut import generate_shortcut_cohort
from agg2exp_core.pipeline import known_answers as ka

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    work = tmp_path_factory.mktemp("known_answers")
    manifest = generate_shortcut_cohort(work / "cohort", n_train=2, n_test=6)
    checkpoints = {m: DATA / f"known_answers_{m}_unet.pt" for m in ka.MODELS}
    config = ka.KnownAnswerConfig(n_permutations=1000, sanity_cases=1, sanity_steps=1)
    return ka.run_known_answers(manifest, checkpoints, work / "ka.duckdb", config)


def test_committed_checkpoints_are_small():
    for model in ka.MODELS:
        assert (DATA / f"known_answers_{model}_unet.pt").stat().st_size < 5e6


def test_marker_carries_more_effusion_mass_with_the_shortcut_network(result):
    comparison = result["comparison"]
    assert comparison["n_cases"] == 6
    assert comparison["mean_shortcut"] > 2 * comparison["mean_control"]
    assert comparison["p_value"] < 0.05


def test_regions_rank_the_marker_higher_with_the_shortcut_network(result):
    for method in ("kernelshap", "causal"):
        shortcut, control = result["ranking"][("shortcut", method)], result["ranking"][("control", method)]
        assert len(shortcut["ranks"]) == 6
        assert np.mean(shortcut["ranks"]) < np.mean(control["ranks"]), method


def test_every_criterion_is_measured(result):
    for model in ka.MODELS:
        drift = result["drift"][model]
        assert drift["n_ref"] > 0 and drift["n_new"] > 0 and np.isfinite(drift["p_value"])
        sanity = result["sanity"][model]
        assert sanity["n_cases"] == 1 and not sanity["checks"].empty
