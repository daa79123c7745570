"""Quality: expected Dice without labels, how far its failure ranking can be trusted, and the cases and
classes it flags; open a flagged case."""
import streamlit as st

from dashboard import ui
from dashboard.views import outliers, quality
from dashboard.widgets import export, navigation, state

ctx = ui.context()
ui.page_header("Quality", ctx, intro="Label-free quality control: each case and class's expected Dice from the "
               "model's own uncertainty, its explanation and its prediction (a Ridge model fitted on labelled "
               "reference cases), with per-class conformal intervals; a cell is flagged a likely failure when its "
               "expected Dice lies below the threshold set at `analyze --failure-below`.")

setup = quality.setup(ctx)
if setup.threshold is None:
    st.info("This run has no expected Dice. Compute it with `python -m agg2exp_core analyze --db STORE --run RUN "
            "--quality-reference DATASET` (DATASET: labelled reference cases).", icon=":material/info:")
    st.stop()

st.subheader("Flagged cases and classes")
flagged = quality.flagged_list(ctx)
if flagged.empty:
    st.caption(f"No case of this cohort has a class with expected Dice below {setup.threshold:g}.")
else:
    st.caption(f"{len(flagged)} (case, class) cells of {flagged.case_id.nunique()} cases with expected Dice below "
               f"{setup.threshold:g}, lowest first; `dice`: the true Dice where labels exist.")
    export.show_table(flagged.drop(columns="class_id"), ctx.name_parts("quality-flagged"), "quality-flagged",
                      height=300)
    rows = list(range(len(flagged)))
    pick, go_button = st.columns([3, 1], vertical_alignment="bottom")
    row = pick.selectbox("Flagged cell", rows, key="quality_cell",
                         format_func=lambda i: quality.cell_label(flagged.iloc[i]))
    cell = flagged.iloc[row]
    if go_button.button("Open in case viewer", icon=":material/radiology:", type="primary", key="quality_open"):
        navigation.switch_to("case_viewer", outliers.case_link(ctx, cell.case_id, int(cell.class_id)))
    shown = quality.contribution_panel(ctx, cell.case_id, int(cell.class_id))
    st.caption(shown.caption)
    if shown.figure is not None:
        export.show_figure(shown.figure, ctx.name_parts("quality-contributions", cell.case_id, cell["class"]),
                           "quality-contributions")
        export.table_download(shown.table, ctx.name_parts("quality-contributions-table", cell.case_id,
                                                          cell["class"]), "quality-contributions-table")

st.subheader("Expected vs true Dice")
estimates = quality.estimate_panel(ctx, setup.threshold)
st.caption(estimates.caption)
if estimates.figure is not None:
    export.show_figure(estimates.figure, ctx.name_parts("quality-expected-vs-true"), "quality-scatter")
    export.table_download(estimates.table, ctx.name_parts("quality-expected-vs-true-table"), "quality-scatter-table")

if setup.scopes:
    st.subheader("Risk-coverage and the ablation")
    scope = state.selectbox("Cases evaluated", setup.scopes, "quality_scope", what="scope",
                            default="external" if "external" in setup.scopes else setup.scopes[0])
    risk = quality.risk_panel(ctx, scope)
    st.caption(risk.caption)
    if risk.figure is not None:
        export.show_figure(risk.figure, ctx.name_parts("quality-risk-coverage", scope), "quality-risk")
        export.table_download(risk.aurc, ctx.name_parts("quality-aurc", scope), "quality-aurc-table")
    st.caption("What each feature group adds: the same model and intervals fitted on each feature set alone "
               "(constant: the fit cases' class means). Metrics on this scope's labelled cases; computed over the "
               "whole run by the analysis step (not re-filtered).")
    export.show_table(quality.ablation_table(setup, scope), ctx.name_parts("quality-ablation", scope),
                      "quality-ablation")
