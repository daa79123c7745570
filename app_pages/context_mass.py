"""Context mass: 1 − e(a → a) per class, split by dataset."""
import streamlit as st

from dashboard import ui
from dashboard.views import context_mass
from dashboard.widgets import export

ctx = ui.context()
ui.page_header("Context mass", ctx, intro="How much of the evidence for class a lies outside the segmented "
               "object itself: context mass = 1 − e(a → a) (absolute mass), per class and dataset.")

shown = context_mass.context_mass(ctx)
if shown.empty:
    st.info(shown.empty)
    st.stop()
export.show_figure(shown.figure, ctx.name_parts("context-mass"), "context")
st.caption(shown.caption)
with st.expander("Summary per class and dataset"):
    export.show_table(shown.summary, ctx.name_parts("context-mass-summary"), "context-table")
