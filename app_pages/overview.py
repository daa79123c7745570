"""Overview: which store, run and cohort are shown; case counts, Dice per class, run provenance."""
import streamlit as st

from dashboard import analytics, data, figures, ui
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

st.subheader("Run provenance")
provenance = analytics.run_provenance(ctx.run)
export.show_table(provenance, ["run-provenance", ctx.run_id], "provenance", width="stretch",
                  height=36 * (len(provenance) + 1) + 2)
if int(ctx.run["n_failures"]):
    st.warning(f"{int(ctx.run['n_failures'])} case(s) failed in this run and have no results.")

if ctx.cases.empty:
    st.info("No case matches the cohort filter. Widen the filter in the sidebar, or press **Reset filter**.")
    st.stop()

st.subheader("Cases")
missing = [w for w, ok in (("sex", ctx.options.sex_recorded), ("age", ctx.options.age_recorded)) if not ok]
if missing:
    st.info(f"This cohort has no {' and no '.join(missing)} recorded (e.g. the published TSV2 aggregates); "
            "filters and comparisons by them are not offered.", icon=":material/info:")
counts = analytics.case_counts(ctx.cases)
export.show_figure(figures.counts_bars(counts, "Cases by dataset, split, sex and age band", ctx.provenance()),
                   ctx.name_parts("case-counts"), "counts")
export.table_download(analytics.counts_long(counts), ctx.name_parts("case-counts"), "counts-table")

st.subheader("Dice per class")
dice = data.dice_distribution(ctx.ref, ctx.run_id, ctx.cohort)
if dice.boxes.empty:
    st.info("No Dice scores for this run's model in the store (no ground-truth labels).")
else:
    classes = [r for r in ctx.class_rois() if r.roi_id in set(dice.boxes.class_id)]
    figure = figures.dice_boxes(dice.boxes, dice.points, classes, "Dice per class",
                                ctx.provenance(int(dice.boxes.n.max())))
    export.show_figure(figure, ctx.name_parts("dice-per-class"), "dice")
    st.caption(analytics.whisker_caption(dice.n_outside, len(dice.points), data.POINTS_PER_SIDE))
    export.show_table(analytics.dice_summary(dice.boxes, classes), ctx.name_parts("dice-summary"), "dice-table")

st.subheader("Runs in this store")
export.show_table(analytics.runs_table(ctx.runs), ["runs", ctx.store_label], "runs")
