"""``causal`` among the evaluated methods: on a linear model its constant-donor effects are the
exact Shapley values, so its faithfulness and perturbation-curve metrics equal KernelSHAP's."""
import numpy as np
import torch

from agg2exp_core.analysis import evaluation as ev
from agg2exp_core.attribution.partitions import cube_partition
from agg2exp_core.pipeline.evaluate import DEFAULT_METHODS
from tests.core.analysis.test_evaluation import LinearSeg  # class 1 logit = w * x: additive over units

torch.set_num_threads(2)


def test_causal_is_evaluated_beside_the_other_methods():
    assert DEFAULT_METHODS == ("vg", "smoothgrad", "ig", "kernelshap", "causal")
    g = torch.Generator().manual_seed(0)
    shape = (10, 8, 6)
    model, image = LinearSeg(torch.rand(shape, generator=g) * 2 - 0.5), torch.rand(1, *shape, generator=g)
    part = cube_partition(shape, (2, 2, 1))
    config = ev.EvaluationConfig(metrics=("faithfulness", "curves", "complexity"),
                                 faithfulness=ev.FaithfulnessConfig(n_subsets=30), curves=ev.CurveConfig(partition=part))
    methods = {"causal": {"partition": part}, "kernelshap": {"partition": part, "n_coalitions": 16}}
    metrics, curves = ev.evaluate_case(model, image, methods, [1], config)
    wide = metrics.pivot_table(index="method", columns="metric", values="value")
    for metric in ("faithfulness", "aopc", "abpc", "naopc", "nabpc", "complexity"):
        assert np.isclose(wide.loc["causal", metric], wide.loc["kernelshap", metric], rtol=1e-5), metric
    assert wide.loc["causal", "abpc"] > 0 and wide.loc["causal", "naopc"] > 0.5
    morf = curves[(curves.method == "causal") & (curves.ordering == "morf")].value.to_numpy()
    # removing units most-positive first: the class score falls by the sorted unit effects
    w, x = model.w.numpy(), image[0].numpy()
    effects = np.sort([float((w * x)[part == u].sum()) for u in range(4)])[::-1]
    assert np.allclose(morf, float((w * x).sum()) - np.concatenate([[0.0], np.cumsum(effects)]), atol=1e-4)
