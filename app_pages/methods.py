"""Methods: agreement, sanity checks, evaluation of attribution methods (Table 1 of the paper) and MoRF/LeRF
perturbation curves."""
import streamlit as st

from dashboard import ui
from dashboard.views import methods, sanity
from dashboard.widgets import causal, export, state

ctx = ui.context()
ui.page_header("Attribution methods", ctx, needs_cases=False, intro="Agreement between runs; sanity checks (does the "
               "explanation change when the model is randomised?); faithfulness, sensitivity, complexity and "
               "efficiency of each explained run (mean ± std over the cohort's evaluated case × class pairs), and "
               "perturbation curves: model output while the most (MoRF) or least (LeRF) relevant input is removed.")

causal.components_section(ctx)  # which network blocks each class depends on (causal runs)

labels = methods.run_labels(ctx)
st.subheader("Agreement between methods")
others = methods.agreement_partners(ctx)
if not others:
    st.caption(f"No other run of this store explains the same cases as {ctx.run_id}, or their agreement was not "
               "computed (`python -m agg2exp_core analyze` does it for every pair of runs over the same cases).")
else:
    other = state.selectbox("Compared with", others, "agree_with", what="run",
                            format_func=lambda r: f"{labels.get(r, r)} · {r}")
    shown = methods.agreement(ctx, other)
    st.caption(shown.caption)
    export.show_figure(shown.figure, ctx.name_parts("method-agreement", other), "agreement")
    export.show_table(shown.table, ctx.name_parts("method-agreement-table", other), "agreement-table")
    if len(shown.disagreement):
        st.caption("The cells where they disagree most: mean absolute difference of the two runs' masses on the "
                   "same case.")
        export.show_table(shown.disagreement, ctx.name_parts("method-disagreement", other), "disagreement")

st.subheader("Sanity checks")
if not sanity.has_checks(ctx):
    st.caption(sanity.EMPTY)
else:
    metric = state.selectbox("Similarity", list(sanity.METRICS), "sanity_metric", what="metric",
                             format_func=sanity.METRICS.get)
    checks = sanity.sanity(ctx, metric)
    st.caption(checks.caption)
    export.show_figure(checks.figure, ctx.name_parts("sanity-curves", metric), "sanity")
    export.table_download(checks.curves, ctx.name_parts("sanity-curves", metric), "sanity-curves-table")
    export.show_table(checks.verdicts, ctx.name_parts("sanity-verdicts", metric), "sanity-verdicts")

evaluation = methods.evaluation(ctx)
if not evaluation.evaluated:
    st.info("No attribution-method evaluation in this store yet. Compute it with "
            "`python -m agg2exp_core evaluate --help` (faithfulness, sensitivity, complexity, efficiency, "
            "MoRF/LeRF curves); the results appear here.", icon=":material/science:")
    st.stop()
if evaluation.empty:
    st.info(evaluation.empty, icon=":material/filter_alt_off:")
    st.stop()

st.subheader("Benchmark of attribution methods")
if evaluation.table is None:
    st.info("No metric values for the evaluated cases of this cohort (only perturbation curves).")
else:
    st.caption("↑ higher is better, ↓ lower is better. Each cell: median (mean ± std) over the evaluated (case, "
               "class) pairs; cases: evaluated cases. The curves run on a grid of cubes, not the units KernelSHAP "
               "and the causal method fit; the random- and volume-ranking columns are what no explanation and "
               "region size alone reach on the same cases. Normalised AOPC/ABPC are left out where s(0) − s(K) is "
               "below 1 % of s(0).")
    export.show_table(evaluation.table, ctx.name_parts("methods-table"), "methods")

st.subheader("Perturbation curves (median and IQR)")
if evaluation.curves is None:
    st.info("No perturbation curves for the evaluated cases of this cohort.")
else:
    export.show_figure(evaluation.curves_figure, ctx.name_parts("perturbation-curves"), "curves")
    export.table_download(evaluation.curves, ctx.name_parts("perturbation-curves"), "curves-table")
