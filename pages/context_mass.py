"""Context mass: 1 − e(a → a) per class, split by dataset."""
import streamlit as st

from dashboard import analytics, data, export, figures, ui
from agg2exp_core.analysis.ordering import group_order

ctx = ui.context()
ui.page_header("Context mass", ctx, intro="How much of the evidence for class a lies outside the segmented "
               "object itself: context mass = 1 − e(a → a) (absolute mass), per class and dataset.")

frame = analytics.context_mass(data.self_mass(ctx.ref, ctx.run_id, ctx.cohort))
if frame.empty:
    st.info("No self mass e(a → a) for this cohort.")
    st.stop()
classes = [r for r in ctx.class_rois() if r.roi_id in set(frame.target_id)]
classes = [classes[i] for i in group_order([c.grp for c in classes])]
figure = figures.context_mass_boxes(frame, classes, "Context mass per class and dataset",
                                    ctx.provenance(frame.case_id.nunique()))
export.show_figure(figure, ctx.name_parts("context-mass"), "context")
summary = analytics.context_mass_summary(frame, classes)
with st.expander("Summary per class and dataset"):
    export.show_table(summary, ctx.name_parts("context-mass-summary"), "context-table")
