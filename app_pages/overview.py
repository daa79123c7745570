"""Overview: which store, run and cohort are shown; case counts, Dice per class, run provenance."""
import streamlit as st

from dashboard import ui
from dashboard.views import overview
from dashboard.widgets import export

ctx = ui.context()
ui.page_header("Overview", ctx, needs_cases=False,
               intro="Cohort-level explanations of a 3-D segmentation model (Agg2Exp). Filter the cohort in the "
                     "sidebar; every page and export follows the filter, and the URL reproduces the view.")

cols = st.columns(4)
cols[0].metric("Cases in cohort", len(ctx.cases), help="Cases of this run that pass the filter")
cols[1].metric("Cases in run", ctx.n_run_cases)
cols[2].metric("Classes", len(ctx.class_rois()))
cols[3].metric("RoIs (sources)", len(ctx.rois))

shown = overview.overview(ctx)
st.subheader("Run provenance")
export.show_table(shown.provenance, ["run-provenance", ctx.run_id], "provenance", width="stretch",
                  height=36 * (len(shown.provenance) + 1) + 2)
if shown.failures:
    st.warning(shown.failures)

if ctx.cases.empty:
    st.info("No case matches the cohort filter. Widen the filter in the sidebar, or press **Reset filter**.")
    st.stop()

st.subheader("Cases")
if shown.missing:
    st.info(shown.missing, icon=":material/info:")
export.show_figure(shown.counts_figure, ctx.name_parts("case-counts"), "counts")
export.table_download(shown.counts, ctx.name_parts("case-counts"), "counts-table")

st.subheader("Dice per class")
if shown.dice_figure is None:
    st.info("No Dice scores for this run's model in the store (no ground-truth labels).")
else:
    export.show_figure(shown.dice_figure, ctx.name_parts("dice-per-class"), "dice")
    st.caption(shown.dice_caption)
    export.show_table(shown.dice_summary, ctx.name_parts("dice-summary"), "dice-table")

st.subheader("Runs in this store")
export.show_table(shown.runs, ["runs", ctx.store_label], "runs")
