"""Global heat map (target class x source RoI) and the two-cohort comparison with permutation tests."""
import streamlit as st

from dashboard import ui
from dashboard.views import heat_map
from dashboard.widgets import causal, class_groups, export, state

ctx = ui.context()
ui.page_header("Global heat map", ctx, intro="Mean RoI importance e(b → a) over the cohort: how much of the "
               "attribution of target class a lies in source RoI b. Hover a cell for its value.")

view = state.radio("View", ["map", "compare"], "view", what="view",
                   format_func={"map": "Cohort mean", "compare": "Compare two cohorts"}.get)
controls = st.columns([2, 2, 2])
kind = ui.kind_picker(ctx, container=controls[0])

if view == "map":
    causal.heat_map_section(ctx)  # signed ATE of causal runs, above their mass map
    order = ui.order_picker(container=controls[1])
    scale = state.radio("Colour scale", ["linear", "log"], "scale", container=controls[2], what="scale")
    zoom = class_groups.zoom_picker(ctx.class_rois(), container=controls[0])   # large label sets only
    shown = heat_map.global_map(ctx, heat_map.MapChoices(kind, order, scale == "log", zoom))
    if shown.empty:
        st.info(shown.empty)
        st.stop()
    named = [] if zoom == "all" else [zoom]
    export.show_figure(shown.figure, ctx.name_parts("global-heatmap", kind, order, *named), "heatmap")
    st.caption(shown.caption)
    with st.expander("Values as a table"):
        export.show_table(shown.table(), ctx.name_parts("global-matrix", kind, *named), "heatmap-table")
    st.stop()

attributes = ui.comparison_attributes(ctx)
if not attributes:
    st.info("This cohort cannot be split into two groups (one dataset, split and sex, no ages or pathologies). "
            "Widen the filter in the sidebar.")
    st.stop()
attribute = state.selectbox("Compare by", attributes, "by", container=controls[1], what="attribute")
pick = st.columns(4)
if attribute == "age":
    ages = heat_map.age_threshold(ctx)
    value_a = state.slider("Age threshold (A: below, B: at or above)", "age_split", ages.low, ages.high, ages.default,
                           1.0, container=pick[0], what="age")
    value_b = None
elif attribute == "pathology":
    value_a = state.selectbox("Pathology", heat_map.attribute_values(ctx, attribute), "pathology_split",
                              container=pick[0], what="pathology")
    value_b = None
else:
    values = heat_map.attribute_values(ctx, attribute)
    value_a = state.selectbox("Cohort A", values, "a", container=pick[0], what=attribute)
    value_b = state.selectbox("Cohort B", [v for v in values if v != value_a], "b", container=pick[1], what=attribute)
permutations = state.selectbox("Permutations", heat_map.PERMUTATION_CHOICES, "perm", container=pick[2],
                               what="number of permutations",
                               help="auto: enough for a cell to pass the FDR correction over all cells.")
fdr = state.toggle("FDR (Benjamini-Hochberg)", "fdr", default=True, container=pick[3])
alpha = state.selectbox("alpha", [0.05, 0.01, 0.1], "alpha", container=pick[3], what="alpha")
choices = heat_map.ComparisonChoices(kind, attribute, value_a, value_b, permutations, bool(fdr), float(alpha))
_, warning = heat_map.n_permutations(ctx, choices)
if warning:
    st.warning(warning)

shown = heat_map.cohort_comparison(ctx, choices)
if shown.problem:
    st.warning(shown.problem)
    st.stop()
st.caption(shown.caption)
export.show_figure(shown.figure, shown.name_parts, "diff")
st.caption(shown.hover_caption)
with st.expander("Cells with p-values", expanded=shown.n_significant > 0):
    export.show_table(shown.table(), ctx.name_parts("comparison", kind, *shown.labels), "diff-table")
