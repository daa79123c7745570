"""Class distributions: e(b → a) over cases for every source b of one target class a."""
import streamlit as st

from dashboard import ui
from dashboard.views import class_distributions
from dashboard.widgets import causal, export, state

ctx = ui.context()
ui.page_header("Class distributions", ctx, intro="For a chosen target class, the distribution over cases of "
               "the importance of every source RoI. Points are outlying cases: hover for case, sex, age, Dice.")

controls = st.columns([2, 2, 1])
classes = ctx.class_rois()
target = ui.roi_picker("Target class", classes, "target", default=class_distributions.default_target(classes),
                       container=controls[0])
kind = ui.kind_picker(ctx, container=controls[1])
log_scale = state.toggle("Log scale", "log", container=controls[2])

causal.distribution_section(ctx, target)  # signed ATE of causal runs
shown = class_distributions.class_distributions(ctx, target, kind, log_scale)
if shown.empty:
    st.info(shown.empty)
    st.stop()
export.show_figure(shown.figure, ctx.name_parts("class-distribution", target.name, kind), "boxes")
st.caption(shown.caption)
with st.expander("Summary per source"):
    export.show_table(shown.summary, ctx.name_parts("class-distribution-summary", target.name, kind), "boxes-table")
