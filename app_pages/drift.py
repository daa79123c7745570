"""Drift: does a cohort's explanation differ from the reference cohort's, class by class?"""
import streamlit as st

from dashboard import ui
from dashboard.views import drift, outliers
from dashboard.widgets import export, navigation, state

ctx = ui.context()
ui.page_header("Explanation drift", ctx, intro="Per target class, the cases' rows e(· → a) of one cohort against "
               "the reference cohort's: energy distance of the rows (as centred log-ratios, since a row's masses sum "
               "to 1) with a permutation p-value and Benjamini-Hochberg q-values across classes; the cells that "
               "moved (Hedges' g) and the cases that lie furthest from the reference.")

setup = drift.setup(ctx)
if setup.tests.empty:
    st.info("This run has no drift analysis. Compute it with `python -m agg2exp_core analyze --db STORE "
            "--run RUN --drift-reference DATASET` (every other dataset is tested against DATASET).",
            icon=":material/info:")
    st.stop()
choice = state.selectbox("Cohort tested against the reference", setup.choices, "drift_cohort",
                         what="cohort", format_func=setup.choice_text)
st.caption(setup.caption)

shown = drift.class_drift(ctx, setup, choice)
if shown.empty:
    st.info(shown.empty)
    st.stop()
st.subheader(shown.heading)
st.caption(shown.caption)
export.show_figure(shown.figure, ctx.name_parts("drift-classes", choice), "drift-classes")
export.show_table(shown.table, ctx.name_parts("drift-classes-table", choice), "drift-classes-table")

if shown.cells is not None:
    st.subheader("The cells that moved")
    if shown.cells_figure is None:
        st.caption("No cell differences stored.")
    else:
        export.show_figure(shown.cells_figure, ctx.name_parts("drift-cells", choice), "drift-cells")
        export.show_table(shown.cells, ctx.name_parts("drift-cells-table", choice), "drift-cells-table")

st.subheader("The cases that drift most")
names = drift.case_targets(ctx)
target = state.selectbox("Class", list(names), "drift_target", what="class", format_func=names.get, to_text=names.get)
cases = drift.case_drift(ctx, target)
if cases.figure is None:
    st.caption("No drift scores for the cases of this cohort.")
    st.stop()
st.caption("Drift score: the case's mean distance to the reference rows minus the mean distance between two "
           "reference rows (reference cases measured leave-one-out): about 0 for a typical reference case.")
export.show_figure(cases.figure, ctx.name_parts("drift-cases", names[target]), "drift-cases")
export.show_table(cases.cases, ctx.name_parts("drift-cases-table", names[target]), "drift-cases-table")
pick, go_button = st.columns([3, 1], vertical_alignment="bottom")
case = pick.selectbox("Case to open", cases.cases.case_id.tolist(), key="drift_case")
if go_button.button("Open in case viewer", icon=":material/radiology:", type="primary", key="drift_open"):
    navigation.switch_to("case_viewer", outliers.case_link(ctx, case, target))
