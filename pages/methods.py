"""Methods: evaluation of attribution methods (Table 1 of the paper) and MoRF/LeRF perturbation curves."""
import streamlit as st

from dashboard import analytics, causal_views, data, export, figures, ui
from dashboard.filters import CohortFilter

ctx = ui.context()
ui.page_header("Attribution methods", ctx, needs_cases=False, intro="Faithfulness, sensitivity, complexity and "
               "efficiency of each explained run (mean ± std over the cohort's evaluated case × class pairs), and "
               "perturbation curves: model output while the most (MoRF) or least (LeRF) relevant input is removed.")

causal_views.components_section(ctx)  # which network blocks each class depends on (causal runs)
evaluated = tuple(data.evaluated_runs(ctx.ref))
if not evaluated:
    st.info("No attribution-method evaluation in this store yet. Compute it with "
            "`python -m agg2exp_core evaluate --help` (faithfulness, sensitivity, complexity, efficiency, "
            "MoRF/LeRF curves); the results appear here.", icon=":material/science:")
    st.stop()

# Evaluation runs have cases of their own (not the selected run's): the cohort filter applies
# to their case metadata; a store without matrix runs offers no filter, so none applies.
cohort = ctx.cohort if ctx.n_run_cases else CohortFilter()
summary = data.method_eval_summary(ctx.ref, evaluated, cohort)
curves = data.perturbation_summary(ctx.ref, evaluated, cohort)
if summary.empty and curves.empty:
    n_evaluated = data.evaluated_case_count(ctx.ref, evaluated)
    st.info(f"None of the {n_evaluated} evaluated case(s) passes the cohort filter. Widen the filter in the "
            "sidebar, or press **Reset filter**.", icon=":material/filter_alt_off:")
    st.stop()

labels = {r.run_id: analytics.method_label(r.method, r.params) for r in ctx.runs.itertuples()}
st.subheader("Benchmark of attribution methods")
if summary.empty:
    st.info("No metric values for the evaluated cases of this cohort (only perturbation curves).")
else:
    st.caption("↑ higher is better, ↓ lower is better. cases: evaluated cases; n: evaluated (case, class) pairs.")
    export.show_table(analytics.method_table(summary, ctx.runs), ctx.name_parts("methods-table"), "methods")

st.subheader("Perturbation curves (median and IQR)")
if curves.empty:
    st.info("No perturbation curves for the evaluated cases of this cohort.")
else:
    figure = figures.perturbation_curves(curves, labels, "MoRF and LeRF perturbation curves",
                                         ctx.provenance(int(curves.n.max()),
                                                        f"n = (case, class) pairs; {len(evaluated)} evaluated run(s)"))
    export.show_figure(figure, ctx.name_parts("perturbation-curves"), "curves")
    export.table_download(curves, ctx.name_parts("perturbation-curves"), "curves-table")
