"""Evaluation of attribution methods: one function per metric (``metrics``), perturbation
curves (``curves``) and all of them on one case (``case``)."""
from agg2exp_core.analysis.evaluation.case import (CURVE_COLUMNS, DEFAULT_METRICS, METRIC_COLUMNS, CurveConfig,
                                                   EvaluationConfig, FaithfulnessConfig, SensitivityConfig,
                                                   evaluate_case)
from agg2exp_core.analysis.evaluation.curves import (curve_masks, curve_metrics, perturbation_curves,
                                                     perturbation_curves_from_game, removal_schedule, unit_scores)
from agg2exp_core.analysis.evaluation.metrics import (FAITHFULNESS_SUBSET, aggregated_logits, bootstrap_ci,
                                                      clean_prediction, complexity, faithfulness_correlation,
                                                      faithfulness_drops, noisy_copies, normalise, pearson,
                                                      random_subsets, sensitivity, sensitivity_distances,
                                                      subset_size, subset_sums, timed_explain)

__all__ = ["CURVE_COLUMNS", "DEFAULT_METRICS", "FAITHFULNESS_SUBSET", "METRIC_COLUMNS", "CurveConfig",
           "EvaluationConfig", "FaithfulnessConfig", "SensitivityConfig", "aggregated_logits", "bootstrap_ci",
           "clean_prediction", "complexity", "curve_masks", "curve_metrics", "evaluate_case",
           "faithfulness_correlation", "faithfulness_drops", "noisy_copies", "normalise", "pearson",
           "perturbation_curves", "perturbation_curves_from_game", "random_subsets", "removal_schedule",
           "sensitivity", "sensitivity_distances", "subset_size", "subset_sums", "timed_explain", "unit_scores"]
