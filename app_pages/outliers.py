"""Outliers: anomaly ranking per class with expected Dice, why a case is an outlier, anomaly vs Dice,
inlier-vs-outlier tests, the paper's Table 2 parity; open a case."""
import streamlit as st

from dashboard import ui
from dashboard.views import outliers
from dashboard.widgets import export, navigation, state

ctx = ui.context()
ui.page_header("Outliers", ctx, intro="Isolation-Forest anomaly scores of the cases' local matrices (per "
               "target class, fitted on the reference cohort). Higher = more anomalous.")

targets = outliers.targets(ctx)
if not targets:
    st.info("This run has no anomaly scores. Compute them with `python -m agg2exp_core analyze --help`.",
            icon=":material/info:")
    st.stop()
names = {t: ctx.roi_name(t) for t in targets}
target = state.selectbox("Target class", targets, "target", default=targets[0], what="class",
                         format_func=names.get, to_text=names.get)
shown = outliers.ranking(ctx, target)
if shown.empty:
    st.info(shown.empty)
    st.stop()
if shown.settings:
    st.caption(shown.settings)

st.subheader("Ranking")
if shown.estimate:
    st.caption(shown.estimate)
ranking = shown.ranking
export.show_table(ranking, ctx.name_parts("anomaly-ranking", names[target]), "ranking", height=320,
                  column_config={"score": st.column_config.NumberColumn(format="%.3f"),
                                 "dice": st.column_config.NumberColumn("Dice", format="%.3f"),
                                 "expected_dice": st.column_config.NumberColumn("expected Dice", format="%.3f"),
                                 "expected_low": st.column_config.NumberColumn("low (80 %)", format="%.3f"),
                                 "expected_high": st.column_config.NumberColumn("high (80 %)", format="%.3f"),
                                 "likely_failure": st.column_config.CheckboxColumn("likely failure")})
ranks = dict(zip(ranking.case_id, ranking["rank"]))
pick, go_button = st.columns([3, 1], vertical_alignment="bottom")
case = pick.selectbox("Case to open", ranking.case_id.tolist(), key="outlier_case",
                      format_func=lambda c: f"{c} (rank {ranks[c]})")
if go_button.button("Open in case viewer", icon=":material/radiology:", type="primary"):
    navigation.switch_to("case_viewer", outliers.case_link(ctx, case, target))

st.subheader(f"Why is {case} an outlier?")
reasons = outliers.reasons(ctx, case, target)
if reasons.figure is None:
    st.caption("No outlier reasons stored for this case (`python -m agg2exp_core analyze` computes them).")
else:
    table = reasons.table
    st.caption(reasons.caption)
    export.show_figure(reasons.figure, ctx.name_parts("outlier-reasons", case, names[target]), "reasons")
    export.table_download(table[["target", "source", "contribution"]],
                          ctx.name_parts("outlier-reasons", case, names[target]), "reasons-table")
    cell_pick, cell_go = st.columns([3, 1], vertical_alignment="bottom")
    cell = cell_pick.selectbox("Cell to inspect", list(range(len(table))), key="reason_cell",
                               format_func=lambda i: f"{table.source.iloc[i]} → {table.target.iloc[i]} "
                                                     f"({table.contribution.iloc[i]:+.3f})")
    if cell_go.button("Open on this class and source", icon=":material/center_focus_strong:", key="reason_open"):
        navigation.switch_to("case_viewer", {"case": case, "target": table.target.iloc[cell],
                                             "source": table.source.iloc[cell]})

export.show_figure(shown.figure, ctx.name_parts("anomaly-vs-dice", names[target]), "scatter")
expected = outliers.expected_dice(ctx, shown)
if expected is not None:
    st.subheader("Expected vs true Dice")
    if expected.caption:
        st.caption(expected.caption)
    export.show_figure(expected.figure, ctx.name_parts("expected-dice", names[target]), "expected-dice")
    export.table_download(expected.quality, ["dice-estimate-validation", ctx.run_id], "expected-validation")

st.subheader("Anomaly vs Dice (Spearman), per class")
spearman = outliers.spearman_table(ctx)
if spearman.empty:
    st.caption("No Spearman table in this run.")
else:
    st.caption("Computed over the whole run by the analysis step (not re-filtered).")
    export.show_table(spearman, ["anomaly-dice-spearman", ctx.run_id], "spearman")

st.subheader("Inliers vs outliers: sex and age")
tests = outliers.outlier_tests(ctx)
if tests.empty:
    st.caption("No inlier/outlier tests in this run (they need sex and age).")
else:
    st.caption("p_holm: Holm-adjusted within the family of the row (the any-class outliers of the paper's test, "
               "or all per-class tests); q_bh: Benjamini-Hochberg over the per-class tests.")
    export.show_table(tests, ["outlier-tests", ctx.run_id], "outlier-tests")

parity = outliers.paper_parity(ctx)
if len(parity):
    st.subheader("Parity with the paper's Table 2")
    st.caption("Spearman of anomaly vs Dice per label in the paper's convention (its score is higher for more "
               "normal cases), beside Table 2 of Agg2Exp (forests fitted on 490 TSV2 training scans there; on the "
               "cohort itself here). Scores averaged over the forests of several seeds (one seed decides too much "
               "on a small cohort); p_holm / q_bh: Holm and Benjamini-Hochberg over the per-label tests.")
    export.show_table(parity, ["paper-parity", ctx.run_id], "paper-parity")
