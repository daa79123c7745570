"""Drift: does a cohort's explanation differ from the reference cohort's, class by class?"""
import streamlit as st

from agg2exp_core.vocabulary import AVERAGE_TARGET, VOLUME_TARGET
from dashboard import analytics, compute, data, figures, ui
from dashboard.widgets import export, navigation, state

ctx = ui.context()
ui.page_header("Explanation drift", ctx, intro="Per target class, the cases' rows e(· → a) of one cohort against "
               "the reference cohort's: energy distance of the rows (as centred log-ratios, since a row's masses sum "
               "to 1) with a permutation p-value and Benjamini-Hochberg q-values across classes; the cells that "
               "moved (Hedges' g) and the cases that lie furthest from the reference.")

tests = data.drift_tests(ctx.ref, ctx.run_id)
if tests.empty:
    st.info("This run has no drift analysis. Compute it with `python -m agg2exp_core analyze --db STORE "
            "--run RUN --drift-reference DATASET` (every other dataset is tested against DATASET).",
            icon=":material/info:")
    st.stop()
reference = str(tests.reference.iloc[0])
classes = ctx.class_rois()
stored_datasets = sorted(tests.dataset.unique())
FILTERED = "filter"          # the URL value of "the cohort of the sidebar's filter"
choice = state.selectbox("Cohort tested against the reference", stored_datasets + [FILTERED], "drift_cohort",
                         what="cohort", format_func=lambda d: "the filtered cohort" if d == FILTERED else f"dataset {d}")
st.caption(f"Reference: dataset {reference} ({int(tests.n_ref.max())} cases). Stored tests use "
           f"{int(tests.n_permutations.iloc[0])} permutations per class; the filtered cohort is tested live "
           "(1000 permutations; the reference's own cases are left out of it).")

if choice == FILTERED:
    shown = compute.cohort_drift(ctx.ref, ctx.run_id, ctx.cohort, reference)
    if shown.empty:
        st.info("The filtered cohort needs at least 2 cases outside the reference dataset.")
        st.stop()
    label = f"filtered cohort ({ctx.cohort_text})"
else:
    shown = tests[tests.dataset == choice]
    label = f"dataset {choice}"
control = shown[shown.target_id == VOLUME_TARGET]
shown = shown[shown.target_id != VOLUME_TARGET]
if len(control) and "kind" in shown and (shown.kind == "lift").all():
    st.caption(f"Tested on the volume-adjusted mass (lift), so a change of region volumes alone (field of view, "
               f"body size) does not read as drift; 'p raw' is the same test on raw mass. Volume shares alone: "
               f"p = {control.p_value.iloc[0]:.3g}.")
n_drifted = int((shown.q_value < 0.05).sum())
st.subheader(f"Classes: {label} vs {reference}")
st.caption(f"{n_drifted} of {len(shown)} classes drift at q < 0.05.")
figure = figures.drift_bars(shown, classes, f"Explanation drift per class · {label} vs {reference}",
                            ctx.provenance(int(shown.n_new.max()), f"reference {reference} (n = {int(shown.n_ref.max())})"))
export.show_figure(figure, ctx.name_parts("drift-classes", choice), "drift-classes")
table = shown.assign(**{"class": shown.target_id.map(lambda t: analytics.roi_name(ctx.rois, t))})
raw = ["p_value_raw"] if "p_value_raw" in table else []   # the live test of a filtered cohort has none
columns = ["class", "statistic", "p_value", "q_value", *raw, "n_ref", "n_new"]
export.show_table(table[columns].rename(columns={"p_value_raw": "p raw"}),
                  ctx.name_parts("drift-classes-table", choice), "drift-classes-table")

if choice != FILTERED:
    st.subheader("The cells that moved")
    cells = data.drift_cells(ctx.ref, ctx.run_id, choice, 20)
    if cells.empty:
        st.caption("No cell differences stored.")
    else:
        export.show_figure(figures.effect_bars(cells, ctx.rois, f"Largest cell shifts · {label} vs {reference}",
                                               ctx.provenance(extra="cells with q < 0.05 first")),
                           ctx.name_parts("drift-cells", choice), "drift-cells")
        named = cells.assign(target=cells.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)),
                             source=cells.source_id.map(lambda s: analytics.roi_name(ctx.rois, s)))
        export.show_table(named[["target", "source", "mean_ref", "mean_new", "difference", "effect_size", "p_value",
                                 "q_value"]], ctx.name_parts("drift-cells-table", choice), "drift-cells-table")

st.subheader("The cases that drift most")
targets = [AVERAGE_TARGET] + [r.roi_id for r in classes]
names = {t: analytics.roi_name(ctx.rois, t) for t in targets}
target = state.selectbox("Class", targets, "drift_target", what="class", format_func=names.get, to_text=names.get)
cases = data.drift_cases(ctx.ref, ctx.run_id, ctx.cohort, target, 25)
if cases.empty:
    st.caption("No drift scores for the cases of this cohort.")
    st.stop()
st.caption("Drift score: the case's mean distance to the reference rows minus the mean distance between two "
           "reference rows (reference cases measured leave-one-out): about 0 for a typical reference case.")
export.show_figure(figures.score_bars(cases, "score", f"Cases furthest from the reference · {names[target]}",
                                      ctx.provenance(len(cases), "the 25 highest scores of the cohort"),
                                      "drift score"), ctx.name_parts("drift-cases", names[target]), "drift-cases")
export.show_table(cases, ctx.name_parts("drift-cases-table", names[target]), "drift-cases-table")
pick, go_button = st.columns([3, 1], vertical_alignment="bottom")
case = pick.selectbox("Case to open", cases.case_id.tolist(), key="drift_case")
if go_button.button("Open in case viewer", icon=":material/radiology:", type="primary", key="drift_open"):
    params = {"case": case}
    if target != AVERAGE_TARGET:
        params["target"] = names[target]
    navigation.switch_to("case_viewer", params)
