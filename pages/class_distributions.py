"""Class distributions: e(b → a) over cases for every source b of one target class a."""
import streamlit as st

from dashboard import analytics, causal_views, data, export, figures, state, ui
from agg2exp_core.analysis.ordering import group_order

ctx = ui.context()
ui.page_header("Class distributions", ctx, intro="For a chosen target class, the distribution over cases of "
               "the importance of every source RoI. Points are outlying cases: hover for case, sex, age, Dice.")

controls = st.columns([2, 2, 1])
classes = ctx.class_rois()
target = ui.roi_picker("Target class", classes, "target", default=classes[1] if len(classes) > 1 else None,
                       container=controls[0])
kind = ui.kind_picker(ctx, container=controls[1])
log_scale = state.toggle("Log scale", "log", container=controls[2])

causal_views.distribution_section(ctx, target)  # signed ATE of causal runs
values = data.target_values(ctx.ref, ctx.run_id, ctx.cohort, target.roi_id, kind)
if values.empty or values.value.isna().all():
    st.info(f"No {data.KIND_LABELS[kind]} values of {target.name} for this cohort.")
    st.stop()
present = sorted(values.source_id.unique())
sources = [ctx.rois[i] for i in present]
sources = [sources[i] for i in group_order([s.grp for s in sources])]
title = f"Importance of each source RoI for {target.name} ({data.KIND_LABELS[kind]})"
figure = figures.class_boxplot(values, sources, target, title, ctx.provenance(values.case_id.nunique()),
                               data.KIND_LABELS[kind], log_scale)
export.show_figure(figure, ctx.name_parts("class-distribution", target.name, kind), "boxes")
with st.expander("Summary per source"):
    export.show_table(analytics.distribution_summary(values, "source_id", {s.roi_id: s.name for s in sources}),
                      ctx.name_parts("class-distribution-summary", target.name, kind), "boxes-table")
