"""Outliers: anomaly ranking per class with expected Dice, why a case is an outlier, anomaly vs Dice,
inlier-vs-outlier tests, the paper's Table 2 parity; open a case."""
import streamlit as st

from agg2exp_core.analysis import paper
from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import analytics, compute, data, figures, ui
from dashboard.widgets import export, navigation, state

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
ranking = compute.outlier_ranking(ctx.ref, ctx.run_id, ctx.cohort, target)
if ranking.empty:
    st.info("No anomaly scores for the cases of this cohort.")
    st.stop()
settings = data.analysis_settings(ctx.ref, ctx.run_id)
if settings:
    st.caption(f"Forests: {settings.get('n_estimators')} trees, contamination {settings.get('contamination')}, "
               f"absent classes {'dropped' if settings.get('absent') == 'drop' else 'scored as zero rows'}; "
               f"score: {settings.get('score_convention')}.")

st.subheader("Ranking")
has_estimate = "expected_dice" in ranking
if has_estimate:
    n_flagged = int(ranking.likely_failure.sum())
    st.caption(f"Expected Dice: estimated without labels from the case's explanations and prediction (80 % "
               f"interval), fitted on labelled reference cases; {n_flagged} case(s) of this cohort flagged as "
               f"likely failures (expected Dice below the reference cases' 10th percentile).")
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
    params = {"case": case}
    if target != AVERAGE_TARGET:
        params["target"] = names[target]
    navigation.switch_to("case_viewer", params)

st.subheader(f"Why is {case} an outlier?")
reasons = compute.reason_table(ctx.ref, ctx.run_id, case, target)
if reasons.empty:
    st.caption("No outlier reasons stored for this case (`python -m agg2exp_core analyze` computes them).")
else:
    st.caption("The matrix cells that push the case's anomaly score most: SHAP values of the class's Isolation "
               "Forest (TreeExplainer), as the shortening of the isolation path they cause, in tree depths."
               + (" Over every class." if target == AVERAGE_TARGET else ""))
    export.show_figure(figures.reason_bars(reasons, f"Top outlier cells · case {case} · {names[target]}",
                                           ctx.provenance(1, f"case {case}")),
                       ctx.name_parts("outlier-reasons", case, names[target]), "reasons")
    export.table_download(reasons[["target", "source", "contribution"]],
                          ctx.name_parts("outlier-reasons", case, names[target]), "reasons-table")
    cells = list(range(len(reasons)))
    cell_pick, cell_go = st.columns([3, 1], vertical_alignment="bottom")
    cell = cell_pick.selectbox("Cell to inspect", cells, key="reason_cell",
                               format_func=lambda i: f"{reasons.source.iloc[i]} → {reasons.target.iloc[i]} "
                                                     f"({reasons.contribution.iloc[i]:+.3f})")
    if cell_go.button("Open on this class and source", icon=":material/center_focus_strong:", key="reason_open"):
        navigation.switch_to("case_viewer", {"case": case, "target": reasons.target.iloc[cell],
                                                             "source": reasons.source.iloc[cell]})

dice_label = "mean Dice over classes" if target == AVERAGE_TARGET else f"Dice of {names[target]}"
figure = figures.anomaly_scatter(ranking, f"Anomaly score vs Dice · {names[target]}",
                                 ctx.provenance(len(ranking)), dice_label)
export.show_figure(figure, ctx.name_parts("anomaly-vs-dice", names[target]), "scatter")
if has_estimate and ranking.dice.notna().any():
    st.subheader("Expected vs true Dice")
    quality = data.dice_estimate_quality(ctx.ref, ctx.run_id)
    if len(quality):
        st.caption("Where the truth is known (validation of the estimate, whole run): " + "; ".join(
            f"{scope}: Spearman {group.set_index('metric').value.get('spearman_case_mean', float('nan')):.2f}, "
            f"coverage {group.set_index('metric').value.get('coverage_class', float('nan')):.0%}"
            for scope, group in quality.groupby("scope")) + ". Estimates of fitted cases are out-of-fold, their "
            "intervals nested (out-of-sample). Intervals are per-class conformal (CV+): their coverage holds for "
            "cases like the fit cases; on a shifted dataset (another scanner, site or population) it is not "
            "guaranteed, see that dataset's coverage above.")
    export.show_figure(figures.expected_dice_scatter(ranking, f"Expected vs true Dice · {names[target]}",
                                                     ctx.provenance(len(ranking)), dice_label),
                       ctx.name_parts("expected-dice", names[target]), "expected-dice")
    export.table_download(quality, ["dice-estimate-validation", ctx.run_id], "expected-validation")

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
    tests = analytics.adjusted_tests(tests)
    tests.insert(0, "class", tests.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)))
    st.caption("p_holm: Holm-adjusted within the family of the row (the any-class outliers of the paper's test, "
               "or all per-class tests); q_bh: Benjamini-Hochberg over the per-class tests.")
    export.show_table(tests.drop(columns="target_id"), ["outlier-tests", ctx.run_id], "outlier-tests")

parity = data.paper_parity(ctx.ref, ctx.run_id)
if len(parity):
    st.subheader("Parity with the paper's Table 2")
    st.caption("Spearman of anomaly vs Dice per label in the paper's convention (its score is higher for more "
               "normal cases), beside Table 2 of Agg2Exp (forests fitted on 490 TSV2 training scans there; on the "
               "cohort itself here). Scores averaged over the forests of several seeds (one seed decides too much "
               "on a small cohort); p_holm / q_bh: Holm and Benjamini-Hochberg over the per-label tests.")
    parity = paper.with_adjusted_p(parity)
    export.show_table(parity.drop(columns="target_id"), ["paper-parity", ctx.run_id], "paper-parity")
