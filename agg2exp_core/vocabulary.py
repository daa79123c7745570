"""One vocabulary for the core, the store and the dashboard: methods, mass kinds, metrics.

A leaf module (no imports beyond the standard library), so the dashboard can read the
names the core writes without importing torch. Whatever writes a method, a mass kind
or a metric into the store takes its name from here, and whatever shows one takes its
title from here.
"""
from __future__ import annotations

from dataclasses import dataclass

# Attribution methods: store name -> display title.
METHODS: dict[str, str] = {
    "vg": "Vanilla Gradient",
    "smoothgrad": "SmoothGrad",
    "ig": "Integrated Gradients",
    "kernelshap": "KernelSHAP",
    "causal": "Causal effect (ATE)",
    "gradcam": "Seg-Grad-CAM",
    "guided_backprop": "Guided Backprop (negative control)",
}
GRADIENT_METHODS: tuple[str, ...] = ("vg", "smoothgrad", "ig")
# IG's quadrature: the default departs from the paper (Eq. 5 is the right Riemann sum): Gauss-Legendre
# is exact for polynomials of degree < 2·steps, so 20 steps give a far smaller completeness error.
IG_DEFAULT_RULE = "gausslegendre"
IG_PAPER_RULE = "riemann_right"

# Mass kinds of Eq. 7 (which part of the attribution is counted) -> local_importance column.
# "lift": the absolute mass per unit volume relative to uniform, e_{b->a} / (|R_b| / |V|) (1 = as
# much evidence as the region's share of the volume; a diffuse map gives ~1 everywhere). Raw mass
# is about the volume share for any diffuse map, so comparisons between cases or cohorts use the
# lift by default (COMPARISON_KIND) with the raw mass one option away.
MASS_KINDS: dict[str, str] = {"abs": "mass_abs", "pos": "mass_pos", "neg": "mass_neg", "lift": "mass_lift"}
MASS_KIND_TITLES: dict[str, str] = {"abs": "absolute mass", "pos": "positive mass", "neg": "negative mass",
                                    "lift": "volume-adjusted mass (lift)"}
# Kinds whose rows are fractions summing to one (the lift is a ratio: 1 = uniform, unbounded above).
FRACTION_KINDS: tuple[str, ...] = ("abs", "pos", "neg")
COMPARISON_KIND = "lift"
# drift.target_id of the control row: do the cohorts' region volume shares alone differ?
VOLUME_TARGET = -3

# anomaly.target_id / anomaly_dice.target_id of the score averaged over classes.
AVERAGE_TARGET = -1
# outlier_tests.target_id of "an outlier for any class" (the paper's inlier/outlier split).
UNION_TARGET = -2
# bootstrap_ci.cohort of "all cases of the run" (other rows name a dataset).
ALL_CASES = "*"
# sampling_noise.low/high: estimate ± z·SE of a normal interval at this level (clipped to [0, 1]).
SAMPLING_NOISE_LEVEL = 0.95
SAMPLING_NOISE_Z = 1.959964  # its two-sided normal quantile

# runs.source: how a run's rows came about.
RUN_SOURCES: tuple[str, ...] = ("precompute", "import", "evaluate")


@dataclass(frozen=True)
class Metric:
    """An attribution-method metric as stored in ``method_eval.metric``."""

    name: str
    title: str
    higher_is_better: bool | None  # None: neither (a bound of an interval)

    @property
    def arrow(self) -> str:
        return {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]

    @property
    def label(self) -> str:
        return f"{self.title}{self.arrow}"


# Order = column order of the Methods table (Table 1 of the Agg2Exp paper, then the
# perturbation-curve metrics of the efficient-KernelSHAP paper).
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("faithfulness", "Faithfulness", True),
    Metric("faithfulness_ci_low", "Faithfulness CI low", None),
    Metric("faithfulness_ci_high", "Faithfulness CI high", None),
    Metric("sensitivity_avg", "Sensitivity (avg)", False),
    Metric("sensitivity_max", "Sensitivity (max)", False),
    Metric("complexity", "Complexity", False),
    Metric("efficiency_s", "Efficiency [s per class]", False),
    Metric("efficiency_volume_s", "Efficiency [s per volume]", False),
    Metric("aopc", "AOPC", True),
    Metric("abpc", "ABPC", True),
    Metric("naopc", "Normalised AOPC", True),
    Metric("nabpc", "Normalised ABPC", True),
    # the same case's curves under a random and a volume (largest unit first) ranking: what a
    # method's AOPC / ABPC must beat
    Metric("aopc_random", "AOPC, random ranking", None),
    Metric("abpc_random", "ABPC, random ranking", None),
    Metric("aopc_volume", "AOPC, volume ranking", None),
    Metric("abpc_volume", "ABPC, volume ranking", None),
)}


# sanity_check: its checks and the similarity metrics of two attribution maps (analysis/sanity/)
SANITY_CHECKS: dict[str, str] = {"mprt": "cascading model randomisation", "random_logit": "random logit",
                                 "edge": "edge detector (Sobel)"}
SANITY_METRICS: dict[str, str] = {"spearman_abs": "Spearman of |attribution|",
                                  "spearman_signed": "Spearman of signed attribution",
                                  "ssim": "SSIM of the central axial slice",
                                  "row_spearman": "Spearman of the Agg2Exp rows (lift)"}


def metric_label(name: str) -> str:
    """Display label of a stored metric name (unknown names are shown as they are)."""
    metric = METRICS.get(name)
    return metric.label if metric else name


def method_title(name: str) -> str:
    return METHODS.get(str(name).lower(), str(name))
