"""Failure modes: the subgroups where the model fails (metadata conditions, explanation clusters), and why."""
import streamlit as st

from dashboard import ui
from dashboard.views import failure_modes
from dashboard.widgets import export, navigation, state

ctx = ui.context()
ui.page_header("Failure modes", ctx, intro="Subgroups of the run's cases on which a class's Dice drops (true Dice "
               "where labelled, else expected Dice): conditions on the case metadata (up to two), and clusters of "
               "the cases' explanations; ranked per class by the evidence of the drop, with FDR control over all "
               "candidates. For each slice: its members, the Dice in and out, and the matrix cells that differ.")

classes = failure_modes.slice_classes(ctx)
if not classes:
    st.info(failure_modes.NO_SLICES, icon=":material/info:")
    st.stop()
class_id = state.selectbox("Class", list(classes), "slice_class", what="class", format_func=classes.get,
                           to_text=classes.get)
ranked = failure_modes.class_slices(ctx, class_id)
st.subheader(f"Failure slices · {ranked.name}")
st.caption(ranked.caption)
export.show_table(ranked.table, ctx.name_parts("failure-slices", ranked.name), "failure-slices-table")

slice_id = st.selectbox("Slice", ranked.slice_ids, format_func=ranked.label, key="slice_pick")
description = ranked.table.slice.iloc[ranked.slice_ids.index(slice_id)]
shown = failure_modes.slice_detail(ctx, class_id, slice_id, description)
st.subheader(shown.heading)
st.caption(shown.caption)
if shown.dice_figure is not None:
    export.show_figure(shown.dice_figure, ctx.name_parts("failure-slice-dice", description), "failure-slice-dice")

st.subheader("Why: the cells that differ")
if shown.cells_figure is None:
    st.caption("No cell differences stored for this slice.")
else:
    export.show_figure(shown.cells_figure, ctx.name_parts("failure-slice-cells", description), "failure-slice-cells")
    export.show_table(shown.cells, ctx.name_parts("failure-slice-cells-table", description),
                      "failure-slice-cells-table")
if len(shown.reasons):
    st.caption("The members' outlier reasons: mean contribution of each cell to their anomaly scores.")
    export.show_table(shown.reasons, ctx.name_parts("failure-slice-reasons", description), "failure-slice-reasons")

st.subheader(f"Members ({len(shown.members)})")
export.show_table(shown.members, ctx.name_parts("failure-slice-members", description), "failure-slice-members",
                  column_config={"case_viewer": st.column_config.LinkColumn("case viewer", display_text="open")})
pick, go_button = st.columns([3, 1], vertical_alignment="bottom")
case = pick.selectbox("Case to open", shown.members.case_id.tolist(), key="slice_case")
if case and go_button.button("Open in case viewer", icon=":material/radiology:", type="primary", key="slice_open"):
    navigation.switch_to("case_viewer", failure_modes.case_link(ctx, case, shown.target_id))
