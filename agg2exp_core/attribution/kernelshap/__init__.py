"""KernelSHAP over supervoxels for 3-D segmentation, with ROI restriction and patch caching.

Rooms: ``shapley`` (Shapley kernel, sampler, solver), ``values`` (value functions),
``boxes`` (box algebra), ``engines`` (direct and cached sliding-window inference),
``game`` (the game of one image and its parameters), ``explainer`` (the public API).
"""
from agg2exp_core.attribution.kernelshap.engines import EngineStats
from agg2exp_core.attribution.kernelshap.explainer import (UnitAttribution, kernelshap_explain, kernelshap_run,
                                                           kernelshap_units)
from agg2exp_core.attribution.kernelshap.game import (GAME_PARAMS, EngineSpec, GameConfig, UnitGame, UnitSpec,
                                                      ValueSpec, build_game)
from agg2exp_core.attribution.kernelshap.shapley import sample_coalitions, shapley_from_game, solve_kernel_shap
from agg2exp_core.attribution.kernelshap.values import VALUES, coalition_values, default_rois

__all__ = ["GAME_PARAMS", "VALUES", "EngineSpec", "EngineStats", "GameConfig", "UnitAttribution", "UnitGame",
           "UnitSpec", "ValueSpec", "build_game", "coalition_values", "default_rois", "kernelshap_explain",
           "kernelshap_run", "kernelshap_units", "sample_coalitions", "shapley_from_game", "solve_kernel_shap"]
