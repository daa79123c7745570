"""Global heat map (target class x source RoI) and the two-cohort comparison with permutation tests."""
import streamlit as st

from agg2exp_core.vocabulary import MASS_KIND_TITLES
from dashboard import analytics, causal_views, compute, figures, ui
from dashboard.widgets import export, state

ctx = ui.context()
ui.page_header("Global heat map", ctx, intro="Mean RoI importance e(b → a) over the cohort: how much of the "
               "attribution of target class a lies in source RoI b. Hover a cell for its value.")

view = state.radio("View", ["map", "compare"], "view", what="view",
                   format_func={"map": "Cohort mean", "compare": "Compare two cohorts"}.get)
controls = st.columns([2, 2, 2])
kind = ui.kind_picker(ctx, container=controls[0])

if view == "map":
    causal_views.heat_map_section(ctx)  # signed ATE of causal runs, above their mass map
    order = state.radio("Order", ["group", "cluster", "id"], "order", container=controls[1], what="order",
                        format_func={"group": "anatomical group", "cluster": "hierarchical clustering",
                                     "id": "label id"}.get)
    scale = state.radio("Colour scale", ["linear", "log"], "scale", container=controls[2], what="scale")
    matrix = compute.global_matrix_view(ctx.ref, ctx.run_id, ctx.cohort, kind, order)
    if matrix.is_empty:
        st.info(f"No {MASS_KIND_TITLES[kind]} values for this run and cohort.")
        st.stop()
    title = f"Global RoI importance ({MASS_KIND_TITLES[kind]}), ordered by {order}"
    intervals = compute.matrix_intervals(ctx.ref, ctx.run_id, ctx.cohort, kind, matrix, len(ctx.cases))
    figure = figures.matrix_heatmap(matrix, title, ctx.provenance(), value_label=MASS_KIND_TITLES[kind],
                                    log_scale=scale == "log", intervals=intervals)
    export.show_figure(figure, ctx.name_parts("global-heatmap", kind, order), "heatmap")
    st.caption(f"Hover a cell for its {intervals.how}.")
    with st.expander("Values as a table"):
        export.show_table(compute.interval_table(matrix, intervals, MASS_KIND_TITLES[kind]),
                          ctx.name_parts("global-matrix", kind), "heatmap-table")
    st.stop()

attributes = analytics.comparison_attributes(ctx.cases)
if not attributes:
    st.info("This cohort cannot be split into two groups (one dataset, split and sex, no ages or pathologies). "
            "Widen the filter in the sidebar.")
    st.stop()
attribute = state.selectbox("Compare by", attributes, "by", container=controls[1], what="attribute")
pick = st.columns(4)
if attribute == "age":
    ages = ctx.cases.age.dropna()
    value_a = state.slider("Age threshold (A: below, B: at or above)", "age_split", float(ages.min()),
                           float(ages.max()), 50.0 if ages.min() < 50 <= ages.max() else float(ages.median()),
                           1.0, container=pick[0], what="age")
    value_b = None
elif attribute == "pathology":
    value_a = state.selectbox("Pathology", analytics.pathology_values(ctx.cases), "pathology_split",
                              container=pick[0], what="pathology")
    value_b = None
else:
    values = sorted(ctx.cases[attribute].dropna().unique())
    value_a = state.selectbox("Cohort A", values, "a", container=pick[0], what=attribute)
    value_b = state.selectbox("Cohort B", [v for v in values if v != value_a], "b", container=pick[1], what=attribute)
permutations = state.selectbox("Permutations", ["auto", "1000", "5000", "10000", "20000"], "perm",
                              container=pick[2], what="number of permutations",
                              help="auto: enough for a cell to pass the FDR correction over all cells.")
fdr = state.toggle("FDR (Benjamini-Hochberg)", "fdr", default=True, container=pick[3])
alpha = state.selectbox("alpha", [0.05, 0.01, 0.1], "alpha", container=pick[3], what="alpha")
n_cells = len(ctx.class_rois()) * len(ctx.rois)
n_permutations = analytics.permutation_count(permutations, n_cells, alpha, fdr)
if fdr and n_permutations + 1 < n_cells / alpha:
    st.warning(f"With {n_permutations} permutations the smallest p-value is 1/{n_permutations + 1}; after the FDR "
               f"correction over {n_cells} cells no cell can reach q < {alpha}. Choose 'auto' or more permutations.")

split = analytics.split_cohort(ctx.cases, attribute, value_a, value_b)
if min(len(split.cases_a), len(split.cases_b)) < 2:
    st.warning(f"Each cohort needs at least 2 cases: {split.label_a} has {len(split.cases_a)}, "
               f"{split.label_b} has {len(split.cases_b)}.")
    st.stop()
comparison = compute.cohort_comparison(ctx.ref, ctx.run_id, ctx.cohort, kind, split, int(n_permutations), 0,
                                       float(alpha), bool(fdr))
result = comparison.result
n_sig = int(result.significant.sum())
st.caption(f"A = {split.label_a} (n = {result.n_a}), B = {split.label_b} (n = {result.n_b}); "
           f"up to {result.n_permutations} permutations (seed {result.seed}; a cell stops at its "
           f"{compute.COMPARISON_STOP_AT}th as extreme as observed, p = {compute.COMPARISON_STOP_AT}/L, Besag & "
           "Clifford); "
           f"{n_sig} significant cell(s) at {'q' if fdr else 'p'} < {alpha}.")
title = f"Difference of mean {MASS_KIND_TITLES[kind]}: {split.label_a} − {split.label_b}"
figure = figures.difference_heatmap(result, comparison.targets, comparison.sources, (split.label_a, split.label_b),
                                    title, ctx.provenance(result.n_a + result.n_b,
                                                          f"{split.label_a} (n={result.n_a}) vs {split.label_b} "
                                                          f"(n={result.n_b}), {result.n_permutations} permutations"),
                                    comparison.interval)
export.show_figure(figure, ctx.name_parts("difference-heatmap", kind, split.label_a, "vs", split.label_b), "diff")
st.caption(f"Hover a cell for the 95 % bootstrap interval of its difference ({compute.COMPARISON_RESAMPLES} "
           "resamples of each cohort's patients).")
with st.expander("Cells with p-values", expanded=n_sig > 0):
    export.show_table(comparison.table(), ctx.name_parts("comparison", kind, split.label_a, "vs", split.label_b),
                      "diff-table")
