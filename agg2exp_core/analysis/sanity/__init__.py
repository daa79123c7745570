"""Sanity checks of an attribution method on a model: cascading model-parameter randomisation (MPRT),
random-logit and edge-detector controls (``run_sanity_checks``; the ``sanity`` command stores them)."""
from agg2exp_core.analysis.sanity.checks import CHECKS, COLUMNS, SanityConfig, run_sanity_checks
from agg2exp_core.analysis.sanity.randomisation import Cascade, Layer, cascade_depths, cascade_layers

__all__ = ["CHECKS", "COLUMNS", "Cascade", "Layer", "SanityConfig", "cascade_depths", "cascade_layers",
           "run_sanity_checks"]
