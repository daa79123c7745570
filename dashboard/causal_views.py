"""Causal runs on the dashboard: signed ATE matrices with their standard errors, class
distributions of effects, the case's effects, network components and relevance masks.

Reads the tables ``causal_effect``, ``component_effect`` and ``relevance_mask`` through
``dashboard.data`` (stores written before they existed lack them: every section then draws nothing). Sections are
called by the pages and draw only when the chosen run has such rows. Colours: a diverging
scale centred at 0 (red: the region's real content supports the class, blue: opposes it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import analytics, data, figures
from dashboard.widgets import export
from dashboard.imaging import slices
from dashboard.analytics import Roi
from dashboard.matrices import SignedLabels, SignedMatrix

ATE_LABEL = "ATE"
RELEVANCE_RGB = np.array([46.0, 204.0, 113.0])


# --- matrices ---------------------------------------------------------------------------------------

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


# --- sections ---------------------------------------------------------------------------------------

def heat_map_section(ctx) -> bool:
    """Cohort mean of the signed ATE (hover: its SE over cases, mean Monte-Carlo SE). True if drawn."""
    summary = data.causal_summary(ctx.ref, ctx.run_id, ctx.cohort)
    if summary.empty:
        return False
    st.subheader("Causal effects (signed ATE)")
    st.caption("ATE(b → a): expected change of class a's aggregated logit f̂_a when region b's content is "
               "replaced by donor content; red = b's real content supports a, blue = it opposes a (zero-centred "
               "scale). Hover: the SE of the cohort mean and the number of cases.")
    targets, sources, m = cohort_matrix(summary, ctx.rois)
    figure = figures.signed_heatmap(SignedMatrix(targets, sources, m["ate"], m["se"], m["n"]),
                                    "Causal effect of each region on each class (cohort mean)", ctx.provenance(),
                                    SignedLabels(ATE_LABEL, "SE of the mean over cases", "n cases"))
    export.show_figure(figure, ctx.name_parts("causal-heatmap"), "causal-heatmap")
    with st.expander("Causal effects as a table"):
        table = summary.assign(target=summary.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)),
                               source=summary.source_id.map(lambda s: analytics.roi_name(ctx.rois, s)))
        export.show_table(table[["target", "source", "mean", "std", "n", "mean_se"]].rename(
            columns={"mean": "mean ATE", "std": "std over cases", "n": "n cases", "mean_se": "mean MC SE"}),
            ctx.name_parts("causal-matrix"), "causal-table")
    return True


def distribution_section(ctx, target: Roi) -> bool:
    """Per source region, the cases' signed ATE on one target (hover: each case's SE). True if drawn."""
    values = data.causal_target_values(ctx.ref, ctx.run_id, ctx.cohort, target.roi_id)
    if values.empty:
        return False
    st.subheader(f"Causal effects on {target.name}")
    sources = [ctx.rois[i] for i in sorted(values.source_id.unique()) if i in ctx.rois]
    figure = figures.signed_boxplot(values, sources, target, f"Causal effect (ATE) of each region on {target.name}",
                                    ctx.provenance(values.case_id.nunique()), ATE_LABEL)
    export.show_figure(figure, ctx.name_parts("causal-distribution", target.name), "causal-boxes")
    return True


def case_section(ctx, case_id: str, target: Roi, artifact: slices.CaseArtifact | None) -> bool:
    """The case's signed ATE matrix with its SE, its component effects and the relevance overlay."""
    local = data.causal_case(ctx.ref, ctx.run_id, case_id)
    components = data.component_effects(ctx.ref, ctx.run_id, ctx.cohort, case_id)
    masks = data.relevance_masks(ctx.ref, ctx.run_id, case_id)
    if local.empty and components.empty and masks.empty:
        return False
    st.subheader("Causal effects of this case")
    if not local.empty:
        targets, sources, m = ordered_matrices(local, ctx.rois, {"ate": "ate", "se": "se", "n": "n"})
        figure = figures.signed_heatmap(SignedMatrix(targets, sources, m["ate"], m["se"], m["n"]),
                                        f"Case {case_id}: ATE(b → a)", ctx.provenance(1, f"case {case_id}"),
                                        SignedLabels(ATE_LABEL, "SE (Monte-Carlo)", "donors"))
        export.show_figure(figure, [f"causal-matrix-{case_id}", ctx.run_id], "causal-case")
    if not components.empty:
        _components_figure(ctx, components, f"Case {case_id}: effect of ablating each network component",
                           ctx.provenance(1, f"case {case_id}"), [f"components-{case_id}", ctx.run_id], "SE",
                           "case-components")
    if not masks.empty and artifact is not None:
        _relevance_view(ctx, case_id, target, artifact, masks)
    return True


def components_section(ctx) -> bool:
    """Which network components each class depends on: cohort mean ATE of ablating them."""
    components = data.component_effects(ctx.ref, ctx.run_id, ctx.cohort)
    if components.empty:
        return False
    st.subheader("Network components each class depends on")
    st.caption(f"Run {ctx.run_id}: ATE of ablating a component (its activation replaced by the donor's) on each "
               "class's f̂; hover: the SE of the cohort mean.")
    frame = components.assign(se_mean=components["std"] / np.sqrt(components["n"].clip(lower=1)))
    _components_figure(ctx, frame, "Effect of ablating each network component (cohort mean)", ctx.provenance(),
                       ctx.name_parts("components"), "SE of the mean over cases", "cohort-components",
                       se_column="se_mean")
    return True


def _components_figure(ctx, frame: pd.DataFrame, title: str, provenance: str, name_parts, se_label: str,
                       key: str, se_column: str = "mean_se") -> None:
    order = frame.drop_duplicates("component").sort_values("position").component.tolist()
    targets = [t for t in sorted(frame.target_id.unique()) if t in ctx.rois]
    ate, se, n = (np.full((len(targets), len(order)), np.nan) for _ in range(3))
    for row in frame.itertuples():
        if row.target_id in ctx.rois:
            i, j = targets.index(row.target_id), order.index(row.component)
            ate[i, j], se[i, j], n[i, j] = row.mean, getattr(row, se_column), row.n
    figure = figures.signed_heatmap(SignedMatrix([ctx.rois[t] for t in targets], order, ate, se, n), title,
                                    provenance, SignedLabels(ATE_LABEL, se_label, "n cases", "network component"))
    export.show_figure(figure, name_parts, key)


def relevance_planes(artifact: slices.CaseArtifact, channel: int, view: str, index: int,
                     width: float = 350.0, level: float = 50.0) -> np.ndarray | None:
    """RGB of a CT plane with the class's relevance mask tinted (None without a stored mask)."""
    mask = artifact.arrays.get(f"relevance_{channel}")
    if mask is None:
        return None
    grey = slices.window(slices.cut(artifact.ct, view, index), width, level)[..., None] * 255.0
    inside = slices.cut(mask, view, index).astype(bool)[..., None]
    rgb = np.where(inside, 0.55 * grey + 0.45 * RELEVANCE_RGB, grey)
    if artifact.pred is not None:
        edge = slices.boundaries((slices.cut(artifact.pred, view, index) == channel).astype(int))
        rgb[edge] = 255.0
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _relevance_view(ctx, case_id: str, target: Roi, artifact: slices.CaseArtifact, masks: pd.DataFrame) -> None:
    channel = ctx.channel_of(target)
    row = masks[masks.target_id == target.roi_id]
    if channel is None or row.empty or f"relevance_{channel}" not in artifact.arrays:
        st.caption(f"No relevance mask stored for {target.name}.")
        return
    r = row.iloc[0]
    st.markdown(f"**Relevance mask of {target.name}**: {int(r.n_units)} supervoxel(s), {int(r.n_voxels)} voxels, "
                f"holding {r.share:.0%} of the positive mass · Dice keeping only the mask "
                f"**{figures.signed_text(r.dice_keep, False)}**, removing it **{figures.signed_text(r.dice_remove, False)}**")
    stored = artifact.class_index(channel)
    columns = st.columns(3)
    for column, view in zip(columns, slices.VIEWS):
        axis = slices.VIEWS[view]
        index = int(stored[axis]) if stored is not None else artifact.ct.shape[axis] // 2
        rgb = relevance_planes(artifact, channel, view, index)
        figure = figures.slice_image(rgb, slices.pixel_spacing(artifact.spacing, view),
                                     f"{view} {index} · relevance of {target.name}", f"{ctx.run_id} · case {case_id}",
                                     slices.CORNER_LABELS[view])
        export.show_figure(figure, [f"relevance-{view}{index}", case_id, target.name, ctx.run_id],
                           f"relevance-{view}", container=column, compact=True)
    st.caption("Green: the relevance mask; white outline: the predicted class. Mediastinum window.")
