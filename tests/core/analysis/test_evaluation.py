"""Attribution-method metrics with known answers, evaluate_case, and the evaluate command."""
import numpy as np
import pytest
import torch

from agg2exp_core.analysis import evaluation as ev
from agg2exp_core.vocabulary import METRICS
from agg2exp_core.attribution.partitions import cube_partition

torch.set_num_threads(2)


class LinearSeg(torch.nn.Module):
    """Class 1 logit = w * x everywhere (always predicted), class 0 = -100: f_1 is linear."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return torch.cat([torch.full_like(x, -100.0), self.w * x], dim=1)


def _linear_case(shape=(10, 8, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(shape, generator=g) * 2 - 0.5
    image = torch.rand(1, *shape, generator=g)
    return LinearSeg(w), image


def exact_explain(model, image, classes=None, method="exact", **_):
    """Input x weight: the exact (IG = Shapley) attribution of the linear model."""
    out = (model.w * image[0])[None].repeat(len(classes), *([1] * (image.dim() - 1)))
    if method == "noise":
        out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return out


def test_complexity_of_known_array():
    a = np.array([0.0, 0.05, 0.2, -1.0, 0.5])
    assert ev.complexity(a, theta=0.1) == pytest.approx(0.6)
    assert ev.complexity(np.zeros(4)) == 0.0


def test_curve_metrics_of_known_curves():
    out = ev.curve_metrics([10, 4, 2, 0], [10, 9, 6, 0])
    assert out["aopc"] == pytest.approx(8.0) and out["abpc"] == pytest.approx(3.0)
    assert out["naopc"] == pytest.approx(0.8) and out["nabpc"] == pytest.approx(0.3)
    assert np.isnan(ev.curve_metrics([1, 1, 1], [1, 1, 1])["naopc"])


def test_faithfulness_of_linear_model_with_exact_attributions_is_one():
    model, image = _linear_case()
    attr = exact_explain(model, image, classes=[1])[0]
    r = ev.faithfulness_correlation(model, image, attr, 1, n=40, seed=0)
    assert r == pytest.approx(1.0, abs=1e-5)
    noise = torch.randn(attr.shape, generator=torch.Generator().manual_seed(2))
    assert abs(ev.faithfulness_correlation(model, image, noise, 1, n=40, seed=0)) < 0.6


def test_subset_size_is_capped_for_small_volumes():
    assert ev.subset_size(512 * 512 * 300) == 224 ** 2
    assert ev.subset_size(1000) == 100
    idx = ev.random_subsets(1000, n=5, seed=0)
    assert idx.shape == (5, 100) and all(len(set(r)) == 100 for r in idx)


def test_sensitivity_known_answers():
    model, image = _linear_case()
    attr = exact_explain(model, image, classes=[1])[0]
    avg, mx = ev.sensitivity(model, image, attr, 1, exact_explain, n=3, lower_bound=0.1, seed=0)
    # by hand: the normalised maps of the noisy copies against the clean one
    a = ev.normalise(attr)
    d = [np.linalg.norm(a - ev.normalise(exact_explain(model, x, classes=[1])[0])) / np.linalg.norm(a)
         for x in ev.noisy_copies(image, 3, 0.1, "uniform", 0)]
    assert avg == pytest.approx(np.mean(d)) and mx == pytest.approx(np.max(d)) and 0 < avg <= mx
    const = lambda model, image, classes=None, **_: torch.ones(1, *image.shape[1:])  # noqa: E731
    assert ev.sensitivity(model, image, torch.ones(image.shape[1:]), 1, const, n=2) == (0.0, 0.0)
    x = ev.noisy_copies(image, 1, 0.1, "uniform", 0)[0]
    assert (x - image).abs().max() <= 0.1 and (x - image).abs().max() > 0.09


def test_perturbation_curves_on_additive_model():
    class Identity(torch.nn.Module):
        def forward(self, x):
            return torch.cat([torch.zeros_like(x), x], dim=1)

    image = torch.zeros(1, 6, 2, 2)
    image[0, 0:2] = 0.75 / 4  # 8 voxels per unit: class-1 logit sums 1.5, 0.5, 1.0
    image[0, 2:4] = 0.25 / 4
    image[0, 4:6] = 0.5 / 4
    part = cube_partition((6, 2, 2), (3, 1, 1))
    attr = image[0] * 4  # any map ranking units 0 > 2 > 1
    out = ev.perturbation_curves(Identity(), image, attr, 1, partition=part)
    assert np.allclose(out["fraction"], [0, 1 / 3, 2 / 3, 1])
    assert np.allclose(out["morf"], [3.0, 1.5, 0.5, 0.0])
    assert np.allclose(out["lerf"], [3.0, 2.5, 1.5, 0.0])
    assert ev.removal_schedule(10, 4).tolist() == [0, 2, 5, 8, 10]


def test_unit_scores():
    part = np.array([[0, 0, 1], [1, 2, -1]])
    a = np.array([[1.0, 3.0, 2.0], [4.0, 5.0, 100.0]])
    assert ev.unit_scores(a, part).tolist() == [4.0, 6.0, 5.0]
    assert ev.unit_scores(a, part, "mean").tolist() == [2.0, 3.0, 5.0]


def test_evaluate_case_frames():
    model, image = _linear_case()
    part = cube_partition(image.shape[1:], (2, 2, 1))
    config = ev.EvaluationConfig(faithfulness=ev.FaithfulnessConfig(n_subsets=30),
                                 sensitivity=ev.SensitivityConfig(n=2), curves=ev.CurveConfig(partition=part))
    metrics, curves = ev.evaluate_case(model, image, {"exact": {}, "noise": {}}, [1], config, explain=exact_explain)
    assert list(metrics.columns) == ev.METRIC_COLUMNS and list(curves.columns) == ev.CURVE_COLUMNS
    wide = metrics.pivot_table(index="method", columns="metric", values="value")
    assert set(wide.columns) == {"faithfulness", "sensitivity_avg", "sensitivity_max", "complexity",
                                 "efficiency_s", "efficiency_volume_s", "aopc", "abpc", "naopc", "nabpc",
                                 "aopc_random", "abpc_random", "aopc_volume", "abpc_volume"}
    assert set(wide.columns) <= set(METRICS)  # every name written has a title in the shared vocabulary
    # one explain call serves all classes: the per-class figure is the volume's share
    assert np.allclose(wide.efficiency_s, wide.efficiency_volume_s)
    assert wide.loc["exact", "faithfulness"] == pytest.approx(1.0, abs=1e-5)
    assert wide.loc["exact", "faithfulness"] > wide.loc["noise", "faithfulness"]
    assert wide.loc["exact", "abpc"] >= wide.loc["noise", "abpc"]  # exact ranking separates best
    morf = curves[(curves.method == "exact") & (curves.ordering == "morf")]
    assert morf.step.tolist() == [0, 1, 2, 3, 4] and morf.fraction.iloc[-1] == 1.0


def test_normalised_curve_metrics_are_flagged_for_a_tiny_or_inverted_span():
    tiny = ev.curve_metrics([10.0, 9.99, 9.995], [10.0, 10.0, 9.995])     # span 0.005 = 0.05 % of s(0)
    assert tiny["aopc"] == pytest.approx(0.0075) and np.isnan(tiny["naopc"]) and np.isnan(tiny["nabpc"])
    inverted = ev.curve_metrics([1.0, 2.0, 3.0], [1.0, 1.5, 3.0])           # removing everything raises it
    assert np.isnan(inverted["naopc"]) and inverted["aopc"] == pytest.approx(-1.5)
    assert ev.curve_metrics([10, 4, 2, 0], [10, 9, 6, 0])["naopc"] == pytest.approx(0.8)


def test_random_and_volume_rankings_stand_beside_every_method():
    model, image = _linear_case(shape=(8, 6, 4))
    part = cube_partition(image.shape[1:], (4, 3, 1))
    config = ev.EvaluationConfig(metrics=("curves",), curves=ev.CurveConfig(partition=part))
    metrics, _ = ev.evaluate_case(model, image, {"exact": {}, "noise": {}}, [1], config, explain=exact_explain)
    wide = metrics.pivot_table(index="method", columns="metric", values="value")
    for baseline in ("aopc_random", "abpc_random", "aopc_volume", "abpc_volume"):
        assert wide.loc["exact", baseline] == wide.loc["noise", baseline]      # the same case, the same rankings
    # additive game: ranking units by their exact contribution is the best MoRF ordering there is
    assert wide.loc["exact", "aopc"] > wide.loc["exact", "aopc_random"]
    assert wide.loc["exact", "aopc"] >= wide.loc["exact", "aopc_volume"]
    volume = ev.curves.baseline_scores(part, 12, "volume")
    assert volume.tolist() == np.bincount(part.ravel()).tolist()
    assert sorted(ev.curves.baseline_scores(part, 12, "random", seed=3)) == list(range(12))


def test_curves_run_on_a_partition_the_unit_methods_did_not_fit():
    from agg2exp_core.analysis.evaluation.case import _fits_on

    default = ev.CurveConfig().partition
    assert default != "semantic"                     # KernelSHAP's and the causal method's default units
    assert not _fits_on({}, default) and _fits_on({"partition": default}, default)


# ---------------------------------------------------------------- the cohort pipeline and its store
def test_evaluate_cohort_writes_store_and_reruns_replace(tmp_path):
    from agg2exp_core import store
    from agg2exp_core.pipeline.evaluate import evaluate_cohort
    from cohorts import make_checkpoint, make_cohort

    manifest = make_cohort(tmp_path / "cohort", n=4)  # c0, c1 train; c2, c3 test
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    db = tmp_path / "store.duckdb"
    config = ev.EvaluationConfig(faithfulness=ev.FaithfulnessConfig(n_subsets=10),
                                 sensitivity=ev.SensitivityConfig(n=1), curves=ev.CurveConfig(steps=3))
    run = dict(methods=("vg", "ig"), classes=("organ_a",), config=config, max_cases=2, split="train",
               progress=False)
    summary = evaluate_cohort(manifest, checkpoint, db, **run)
    assert summary.done == ["c0", "c1"] and not summary.failed
    with store.connect(db, read_only=True) as con:
        rows = con.execute("SELECT r.method, e.case_id, e.metric, e.value FROM method_eval e "
                           "JOIN runs r USING (run_id)").df()
        organ = con.execute("SELECT roi_id FROM rois WHERE name = 'organ_a'").fetchone()[0]
        targets = con.execute("SELECT DISTINCT target_id FROM method_eval").fetchall()
        n_curve = con.execute("SELECT count(*) FROM perturbation_curve").fetchone()[0]
        sources = set(con.execute("SELECT DISTINCT source FROM runs").fetchnumpy()["source"])
    assert set(rows.method) == {"vg", "ig"} and set(rows.case_id) == {"c0", "c1"}
    assert targets == [(organ,)] and sources == {"evaluate"}
    assert set(rows.metric) <= set(METRICS) and rows.value.notna().any()
    assert n_curve == 2 * 2 * 2 * 4  # methods x cases x orderings x (K + 1) with K = 3 steps
    evaluate_cohort(manifest, checkpoint, db, **run)  # rerun replaces, never duplicates
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM perturbation_curve").fetchone()[0] == n_curve


def test_resolve_classes():
    from agg2exp_core.pipeline.evaluate import resolve_classes

    names = ["background", "aorta", "heart"]
    assert resolve_classes(None, names) == [1, 2]
    assert resolve_classes(["heart", "1"], names) == [2, 1]
    with pytest.raises(Exception, match="unknown class 'lung'"):
        resolve_classes(["lung"], names)
