"""Causal runs: signed ATE matrices with their standard errors, class distributions of effects, the
case's effects, network components and relevance masks (no Streamlit; ``widgets.causal`` lays them out).

Reads the tables ``causal_effect``, ``component_effect`` and ``relevance_mask`` through ``dashboard.data``
(stores written before they existed lack them: every view is then None). Colours: a diverging scale
centred at 0 (red: the region's real content supports the class, blue: opposes it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.store.artifacts import relevance_key
from dashboard import analytics, data, figures
from dashboard.analytics import Roi
from dashboard.context import ViewContext
from dashboard.imaging import artefact, slices
from dashboard.imaging.relevance import relevance_planes
from dashboard.matrices import SignedLabels, SignedMatrix
from dashboard.views.common import Figure, with_names

ATE_LABEL = "ATE"


def ordered_matrices(long: pd.DataFrame, rois: dict[int, Roi], columns: dict[str, str]
                     ) -> tuple[list[Roi], list[Roi], dict[str, np.ndarray]]:
    """Target x source matrices of several columns of a long frame, in anatomical-group order."""
    targets, sources, first = analytics.matrix_from_long(long, next(iter(columns.values())))
    target_rois, source_rois = [rois[t] for t in targets], [rois[s] for s in sources]
    order = analytics.order_matrix(np.nan_to_num(first), [r.grp for r in target_rois],
                                   [r.grp for r in source_rois], "group")
    out = {}
    for key, column in columns.items():
        matrix = analytics.matrix_from_long(long, column)[2]
        out[key] = matrix[np.ix_(order.rows, order.columns)]
    return [target_rois[i] for i in order.rows], [source_rois[j] for j in order.columns], out


def cohort_matrix(summary: pd.DataFrame, rois: dict[int, Roi]):
    """Mean ATE, the SE of that mean over cases (std / sqrt n) and n, ordered."""
    frame = summary.copy()
    frame["se_mean"] = frame["std"] / np.sqrt(frame["n"].clip(lower=1))
    return ordered_matrices(frame, rois, {"ate": "mean", "se": "se_mean", "n": "n"})


def _signed(targets, sources, m: dict[str, np.ndarray]) -> SignedMatrix:
    return SignedMatrix(targets, sources, m["ate"], m["se"], m["n"])


@dataclass
class CohortEffects:
    figure: Figure
    table: pd.DataFrame
    table_name: list[str]


def cohort_effects(ctx: ViewContext) -> CohortEffects | None:
    """Cohort mean of the signed ATE (hover: its SE over cases and n)."""
    summary = data.causal_summary(ctx.ref, ctx.run_id, ctx.cohort)
    if summary.empty:
        return None
    targets, sources, m = cohort_matrix(summary, ctx.rois)
    figure = figures.signed_heatmap(_signed(targets, sources, m),
                                    "Causal effect of each region on each class (cohort mean)", ctx.provenance(),
                                    SignedLabels(ATE_LABEL, "SE of the mean over cases", "n cases"))
    table = with_names(ctx, summary, target="target_id", source="source_id")
    table = table[["target", "source", "mean", "std", "n", "mean_se"]].rename(
        columns={"mean": "mean ATE", "std": "std over cases", "n": "n cases", "mean_se": "mean MC SE"})
    return CohortEffects(Figure(figure, ctx.name_parts("causal-heatmap")), table, ctx.name_parts("causal-matrix"))


def target_effects(ctx: ViewContext, target: Roi) -> Figure | None:
    """Per source region, the cases' signed ATE on one target (hover: each case's SE)."""
    values = data.causal_target_values(ctx.ref, ctx.run_id, ctx.cohort, target.roi_id)
    if values.empty:
        return None
    sources = [ctx.rois[i] for i in sorted(values.source_id.unique()) if i in ctx.rois]
    figure = figures.signed_boxplot(values, sources, target, f"Causal effect (ATE) of each region on {target.name}",
                                    ctx.provenance(values.case_id.nunique()), ATE_LABEL)
    return Figure(figure, ctx.name_parts("causal-distribution", target.name))


def components_figure(ctx: ViewContext, frame: pd.DataFrame, title: str, provenance: str, name_parts: list[str],
                      se_label: str, se_column: str = "mean_se") -> Figure:
    """Classes x network components: the ATE of ablating each component."""
    order = frame.drop_duplicates("component").sort_values("position").component.tolist()
    targets = [t for t in sorted(frame.target_id.unique()) if t in ctx.rois]
    ate, se, n = (np.full((len(targets), len(order)), np.nan) for _ in range(3))
    for row in frame.itertuples():
        if row.target_id in ctx.rois:
            i, j = targets.index(row.target_id), order.index(row.component)
            ate[i, j], se[i, j], n[i, j] = row.mean, getattr(row, se_column), row.n
    figure = figures.signed_heatmap(SignedMatrix([ctx.rois[t] for t in targets], order, ate, se, n), title,
                                    provenance, SignedLabels(ATE_LABEL, se_label, "n cases", "network component"))
    return Figure(figure, name_parts)


def cohort_components(ctx: ViewContext) -> Figure | None:
    """Which network components each class depends on: cohort mean ATE of ablating them."""
    components = data.component_effects(ctx.ref, ctx.run_id, ctx.cohort)
    if components.empty:
        return None
    frame = components.assign(se_mean=components["std"] / np.sqrt(components["n"].clip(lower=1)))
    return components_figure(ctx, frame, "Effect of ablating each network component (cohort mean)", ctx.provenance(),
                             ctx.name_parts("components"), "SE of the mean over cases", se_column="se_mean")


@dataclass
class Relevance:
    """A class's relevance mask on the three views (``problem``: why none is shown)."""

    problem: str = ""
    summary: str = ""
    figures: dict[str, Figure] = field(default_factory=dict)


@dataclass
class CaseEffects:
    matrix: Figure | None
    components: Figure | None
    relevance: Relevance | None


def case_effects(ctx: ViewContext, case_id: str, target: Roi, artifact: artefact.CaseArtifact | None
                 ) -> CaseEffects | None:
    """The case's signed ATE matrix with its SE, its component effects and the relevance overlay."""
    local = data.causal_case(ctx.ref, ctx.run_id, case_id)
    components = data.component_effects(ctx.ref, ctx.run_id, ctx.cohort, case_id)
    masks = data.relevance_masks(ctx.ref, ctx.run_id, case_id)
    if local.empty and components.empty and masks.empty:
        return None
    matrix = None
    if not local.empty:
        targets, sources, m = ordered_matrices(local, ctx.rois, {"ate": "ate", "se": "se", "n": "n"})
        matrix = Figure(figures.signed_heatmap(_signed(targets, sources, m), f"Case {case_id}: ATE(b → a)",
                                               ctx.provenance(1, f"case {case_id}"),
                                               SignedLabels(ATE_LABEL, "SE (Monte-Carlo)", "donors")),
                        [f"causal-matrix-{case_id}", ctx.run_id])
    parts = None
    if not components.empty:
        parts = components_figure(ctx, components, f"Case {case_id}: effect of ablating each network component",
                                  ctx.provenance(1, f"case {case_id}"), [f"components-{case_id}", ctx.run_id], "SE")
    relevance = _relevance(ctx, case_id, target, artifact, masks) if not masks.empty and artifact is not None else None
    return CaseEffects(matrix, parts, relevance)


def _relevance(ctx: ViewContext, case_id: str, target: Roi, artifact: artefact.CaseArtifact,
               masks: pd.DataFrame) -> Relevance:
    channel = ctx.channel_of(target)
    row = masks[masks.target_id == target.roi_id]
    if channel is None or row.empty or relevance_key(channel) not in artifact.arrays:
        return Relevance(f"No relevance mask stored for {target.name}.")
    r = row.iloc[0]
    summary = (f"**Relevance mask of {target.name}**: {int(r.n_units)} supervoxel(s), {int(r.n_voxels)} voxels, "
               f"holding {r.share:.0%} of the positive mass · Dice keeping only the mask "
               f"**{figures.signed_text(r.dice_keep, False)}**, removing it "
               f"**{figures.signed_text(r.dice_remove, False)}**")
    stored = artifact.class_index(channel)
    shown: dict[str, Figure] = {}
    for view in slices.VIEWS:
        axis = slices.VIEWS[view]
        index = int(stored[axis]) if stored is not None else artifact.ct.shape[axis] // 2
        figure: go.Figure = figures.slice_image(relevance_planes(artifact, channel, view, index),
                                                slices.pixel_spacing(artifact.spacing, view),
                                                f"{view} {index} · relevance of {target.name}",
                                                f"{ctx.run_id} · case {case_id}", slices.CORNER_LABELS[view])
        shown[view] = Figure(figure, [f"relevance-{view}{index}", case_id, target.name, ctx.run_id])
    return Relevance("", summary, shown)
