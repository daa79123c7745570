"""The causal sections of the pages (drawn only when the chosen run has causal rows): the layout of
``dashboard.views.causal``."""
from __future__ import annotations

import streamlit as st

from dashboard.analytics import Roi
from dashboard.imaging import artefact
from dashboard.views import causal
from dashboard.widgets import export


def heat_map_section(ctx) -> bool:
    """Cohort mean of the signed ATE (hover: its SE over cases, mean Monte-Carlo SE). True if drawn."""
    shown = causal.cohort_effects(ctx)
    if shown is None:
        return False
    st.subheader("Causal effects (signed ATE)")
    st.caption("ATE(b → a): expected change of class a's aggregated logit f̂_a when region b's content is "
               "replaced by donor content; red = b's real content supports a, blue = it opposes a (zero-centred "
               "scale). Hover: the SE of the cohort mean and the number of cases.")
    export.show_figure(shown.figure.figure, shown.figure.name_parts, "causal-heatmap")
    with st.expander("Causal effects as a table"):
        export.show_table(shown.table, shown.table_name, "causal-table")
    return True


def distribution_section(ctx, target: Roi) -> bool:
    """Per source region, the cases' signed ATE on one target (hover: each case's SE). True if drawn."""
    shown = causal.target_effects(ctx, target)
    if shown is None:
        return False
    st.subheader(f"Causal effects on {target.name}")
    export.show_figure(shown.figure, shown.name_parts, "causal-boxes")
    return True


def case_section(ctx, case_id: str, target: Roi, artifact: artefact.CaseArtifact | None) -> bool:
    """The case's signed ATE matrix with its SE, its component effects and the relevance overlay."""
    shown = causal.case_effects(ctx, case_id, target, artifact)
    if shown is None:
        return False
    st.subheader("Causal effects of this case")
    if shown.matrix is not None:
        export.show_figure(shown.matrix.figure, shown.matrix.name_parts, "causal-case")
    if shown.components is not None:
        export.show_figure(shown.components.figure, shown.components.name_parts, "case-components")
    relevance = shown.relevance
    if relevance is not None and relevance.problem:
        st.caption(relevance.problem)
    elif relevance is not None:
        st.markdown(relevance.summary)
        for column, (view, figure) in zip(st.columns(3), relevance.figures.items()):
            export.show_figure(figure.figure, figure.name_parts, f"relevance-{view}", container=column, compact=True)
        st.caption("Green: the relevance mask; white outline: the predicted class. Mediastinum window.")
    return True


def components_section(ctx) -> bool:
    """Which network components each class depends on: cohort mean ATE of ablating them."""
    shown = causal.cohort_components(ctx)
    if shown is None:
        return False
    st.subheader("Network components each class depends on")
    st.caption(f"Run {ctx.run_id}: ATE of ablating a component (its activation replaced by the donor's) on each "
               "class's f̂; hover: the SE of the cohort mean.")
    export.show_figure(shown.figure, shown.name_parts, "cohort-components")
    return True
