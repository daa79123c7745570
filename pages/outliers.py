"""Outliers: anomaly ranking per class, anomaly vs Dice, inlier-vs-outlier tests; open a case."""
import streamlit as st

from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import analytics, data, export, figures, state, ui

ctx = ui.context()
ui.page_header("Outliers", ctx, intro="Isolation-Forest anomaly scores of the cases' local matrices (per "
               "target class, fitted on the reference cohort). Higher = more anomalous.")

targets = data.anomaly_targets(ctx.ref, ctx.run_id)
if not targets:
    st.info("This run has no anomaly scores. Compute them with `python -m agg2exp_core analyze --help`.",
            icon=":material/info:")
    st.stop()
names = {t: analytics.roi_name(ctx.rois, t) for t in targets}
target = state.selectbox("Target class", targets, "target", default=targets[0], what="class",
                         format_func=names.get, to_text=names.get)
ranking = data.anomaly_ranking(ctx.ref, ctx.run_id, ctx.cohort, target)
if ranking.empty:
    st.info("No anomaly scores for the cases of this cohort.")
    st.stop()

st.subheader("Ranking")
export.show_table(ranking, ctx.name_parts("anomaly-ranking", names[target]), "ranking", height=320,
                  column_config={"score": st.column_config.NumberColumn(format="%.3f"),
                                 "dice": st.column_config.NumberColumn("Dice", format="%.3f")})
ranks = dict(zip(ranking.case_id, ranking["rank"]))
pick, go_button = st.columns([3, 1], vertical_alignment="bottom")
case = pick.selectbox("Case to open", ranking.case_id.tolist(), key="outlier_case",
                      format_func=lambda c: f"{c} (rank {ranks[c]})")
if go_button.button("Open in case viewer", icon=":material/radiology:", type="primary"):
    params = {"case": case}
    if target != AVERAGE_TARGET:
        params["target"] = names[target]
    st.switch_page("pages/case_viewer.py", query_params=params)

dice_label = "mean Dice over classes" if target == AVERAGE_TARGET else f"Dice of {names[target]}"
figure = figures.anomaly_scatter(ranking, f"Anomaly score vs Dice · {names[target]}",
                                 ctx.provenance(len(ranking)), dice_label)
export.show_figure(figure, ctx.name_parts("anomaly-vs-dice", names[target]), "scatter")

st.subheader("Anomaly vs Dice (Spearman), per class")
spearman = data.anomaly_dice(ctx.ref, ctx.run_id)
if spearman.empty:
    st.caption("No Spearman table in this run.")
else:
    spearman.insert(0, "class", spearman.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)))
    st.caption("Computed over the whole run by the analysis step (not re-filtered).")
    export.show_table(spearman.drop(columns="target_id"), ["anomaly-dice-spearman", ctx.run_id], "spearman")

st.subheader("Inliers vs outliers: sex and age")
tests = data.outlier_tests(ctx.ref, ctx.run_id)
if tests.empty:
    st.caption("No inlier/outlier tests in this run (they need sex and age).")
else:
    tests.insert(0, "class", tests.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)))
    export.show_table(tests.drop(columns="target_id"), ["outlier-tests", ctx.run_id], "outlier-tests")
