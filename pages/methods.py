"""Methods: evaluation of attribution methods (Table 1 of the paper) and MoRF/LeRF perturbation curves."""
import streamlit as st

from dashboard import analytics, causal_views, data, export, figures, ui

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
if ctx.cases.empty:
    st.info("No case matches the cohort filter. Widen the filter in the sidebar, or press **Reset filter**.")
    st.stop()

labels = {r.run_id: analytics.method_label(r.method, r.params) for r in ctx.runs.itertuples()}
summary = data.method_eval_summary(ctx.ref, evaluated, ctx.cohort)
st.subheader("Benchmark of attribution methods")
if summary.empty:
    st.info("No evaluated case in this cohort.")
else:
    st.caption("↑ higher is better, ↓ lower is better. n: evaluated (case, class) pairs.")
    export.show_table(analytics.method_table(summary, ctx.runs), ctx.name_parts("methods-table"), "methods")

st.subheader("Perturbation curves (median and IQR)")
curves = data.perturbation_summary(ctx.ref, evaluated, ctx.cohort)
if curves.empty:
    st.info("No perturbation curves for this cohort.")
else:
    figure = figures.perturbation_curves(curves, labels, "MoRF and LeRF perturbation curves",
                                         ctx.provenance(int(curves.n.max()),
                                                        f"n = (case, class) pairs; {len(evaluated)} evaluated run(s)"))
    export.show_figure(figure, ctx.name_parts("perturbation-curves"), "curves")
    export.table_download(curves, ctx.name_parts("perturbation-curves"), "curves-table")
