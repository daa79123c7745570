"""Plotly figure builders (pure: value objects in, ``go.Figure`` out; no Streamlit).

Every builder takes a ``provenance`` line that becomes the figure's subtitle, so an exported
PNG/SVG/PDF still says which run, method, cohort filter and n it shows. RoIs are coloured by
anatomical group (cardiovascular red, muscle yellow, bone blue, organ grey, pathology black) as in
the paper.

``base`` (template, title, labels, formats) and ``heatmap`` (the heat-map base: cells, hover,
colour bar, axes) are shared; ``matrix``, ``comparison`` and ``causal`` are its variants;
``boxes``, ``bars``, ``scatter``, ``graph``, ``slices``, ``failure_slices`` and ``sanity`` draw the rest.
"""
from dashboard.figures.bars import (agreement_bars, counts_bars, drift_bars, effect_bars, reason_bars,
                                    score_bars)
from dashboard.figures.base import signed_bound, signed_text
from dashboard.figures.boxes import class_boxplot, context_mass_boxes, dice_boxes, signed_boxplot
from dashboard.figures.causal import signed_heatmap
from dashboard.figures.comparison import difference_heatmap
from dashboard.figures.failure_slices import slice_cell_bars, slice_dice_strip
from dashboard.figures.graph import knowledge_graph
from dashboard.figures.heatmap import add_intervals, add_reliability, add_sampling_noise
from dashboard.figures.matrix import matrix_heatmap
from dashboard.figures.sanity import randomisation_curves
from dashboard.figures.scatter import anomaly_scatter, expected_dice_scatter, perturbation_curves
from dashboard.figures.slices import SURFACE_DIVERGING, png_source, slice_height, slice_image, surface_mesh

__all__ = ["add_intervals", "add_reliability", "add_sampling_noise", "agreement_bars", "anomaly_scatter", "class_boxplot",
           "context_mass_boxes", "counts_bars", "dice_boxes", "difference_heatmap", "drift_bars", "effect_bars",
           "expected_dice_scatter", "knowledge_graph", "matrix_heatmap", "perturbation_curves", "png_source", "randomisation_curves",
           "reason_bars", "score_bars", "signed_bound", "signed_boxplot", "signed_heatmap", "signed_text",
           "slice_cell_bars", "slice_dice_strip", "slice_height", "slice_image", "surface_mesh", "SURFACE_DIVERGING"]
