"""Class distributions: e(b → a) over cases for every source b of one target class a."""
import streamlit as st

from agg2exp_core.analysis.ordering import group_order
from agg2exp_core.vocabulary import MASS_KIND_TITLES
from dashboard import analytics, causal_views, data, figures, ui
from dashboard.widgets import export, state

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
distribution = data.source_distribution(ctx.ref, ctx.run_id, ctx.cohort, target.roi_id, kind)
boxes = distribution.boxes
if boxes.empty:
    st.info(f"No {MASS_KIND_TITLES[kind]} values of {target.name} for this cohort.")
    st.stop()
sources = [ctx.rois[i] for i in boxes.source_id if i in ctx.rois]
sources = [sources[i] for i in group_order([s.grp for s in sources])]
title = f"Importance of each source RoI for {target.name} ({MASS_KIND_TITLES[kind]})"
figure = figures.class_boxplot(boxes, distribution.points, sources, target, title,
                               ctx.provenance(int(boxes.n.max())), MASS_KIND_TITLES[kind], log_scale)
export.show_figure(figure, ctx.name_parts("class-distribution", target.name, kind), "boxes")
st.caption(analytics.whisker_caption(distribution.n_outside, len(distribution.points), data.POINTS_PER_SIDE))
with st.expander("Summary per source"):
    export.show_table(analytics.distribution_summary(boxes, "source_id", {s.roi_id: s.name for s in sources}),
                      ctx.name_parts("class-distribution-summary", target.name, kind), "boxes-table")
