"""Context mass: 1 − e(a → a) per class, split by dataset."""
import streamlit as st

from agg2exp_core.analysis.ordering import group_order
from dashboard import analytics, data, figures, ui
from dashboard.widgets import export

ctx = ui.context()
ui.page_header("Context mass", ctx, intro="How much of the evidence for class a lies outside the segmented "
               "object itself: context mass = 1 − e(a → a) (absolute mass), per class and dataset.")

distribution = data.context_mass_distribution(ctx.ref, ctx.run_id, ctx.cohort)
boxes = distribution.boxes
if boxes.empty:
    st.info("No self mass e(a → a) for this cohort.")
    st.stop()
classes = [r for r in ctx.class_rois() if r.roi_id in set(boxes.target_id)]
classes = [classes[i] for i in group_order([c.grp for c in classes])]
n_cases = int(boxes.groupby("target_id")["n"].sum().max())
figure = figures.context_mass_boxes(boxes, distribution.points, classes, "Context mass per class and dataset",
                                    ctx.provenance(n_cases))
export.show_figure(figure, ctx.name_parts("context-mass"), "context")
st.caption(analytics.whisker_caption(distribution.n_outside, len(distribution.points), data.POINTS_PER_SIDE))
with st.expander("Summary per class and dataset"):
    export.show_table(analytics.context_mass_summary(boxes, classes), ctx.name_parts("context-mass-summary"),
                      "context-table")
