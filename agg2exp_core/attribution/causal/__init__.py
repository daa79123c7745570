"""Causal effects for 3-D segmentation: interventions on image regions and on network components.

Rooms: ``donors`` (what a region is replaced with), ``effects`` (regional ATE with
Monte-Carlo over donors, on the KernelSHAP game's cached engines), ``components``
(ablation of network blocks or channels by forward hooks), ``relevance`` (the smallest set
of supervoxels holding a share of the positive attribution, and its faithfulness).
"""
from agg2exp_core.attribution.causal.components import (ABLATIONS, ComponentEffects, component_effects,
                                                        default_blocks)
from agg2exp_core.attribution.causal.donors import DONORS, DonorSet, check_donors, donor_set
from agg2exp_core.attribution.causal.effects import (CAUSAL_PARAMS, MIN_DONORS, RegionEffects, SamplingSpec,
                                                     causal_explain, causal_run, effect_interval, summed_effects)
from agg2exp_core.attribution.causal.relevance import (DEFAULT_SHARE, mask_faithfulness, relevance_mask,
                                                       relevance_units, unit_values)

__all__ = ["ABLATIONS", "CAUSAL_PARAMS", "DEFAULT_SHARE", "DONORS", "MIN_DONORS", "ComponentEffects", "DonorSet",
           "RegionEffects", "SamplingSpec", "causal_explain", "causal_run", "check_donors", "component_effects",
           "default_blocks", "donor_set", "effect_interval", "mask_faithfulness", "relevance_mask", "relevance_units",
           "summed_effects", "unit_values"]
