"""Methods: evaluation of attribution methods (Table 1 of the paper) and MoRF/LeRF perturbation curves."""
import streamlit as st

from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import analytics, causal_views, data, figures, ui
from dashboard.widgets import export, state
from dashboard.filters import CohortFilter

ctx = ui.context()
ui.page_header("Attribution methods", ctx, needs_cases=False, intro="Faithfulness, sensitivity, complexity and "
               "efficiency of each explained run (mean ± std over the cohort's evaluated case × class pairs), and "
               "perturbation curves: model output while the most (MoRF) or least (LeRF) relevant input is removed.")

causal_views.components_section(ctx)  # which network blocks each class depends on (causal runs)

labels = {r.run_id: analytics.method_label(r.method, r.params) for r in ctx.runs.itertuples()}
st.subheader("Agreement between methods")
agreement = data.method_agreement(ctx.ref, ctx.run_id)
if agreement.empty:
    st.caption(f"No other run of this store explains the same cases as {ctx.run_id}, or their agreement was not "
               "computed (`python -m agg2exp_core analyze` does it for every pair of runs over the same cases).")
else:
    others = sorted(agreement.other_run_id.unique())
    other = state.selectbox("Compared with", others, "agree_with", what="run",
                            format_func=lambda r: f"{labels.get(r, r)} · {r}")
    rows = agreement[agreement.other_run_id == other]
    pooled = rows[rows.target_id == AVERAGE_TARGET]
    st.caption(f"Per class, the Spearman rank correlation of the two runs' rows e(· → a) on the same case, mean "
               f"over {int(rows.n_cases.max())} common cases with its 95 % bootstrap interval; all classes: "
               f"{pooled.spearman_mean.iloc[0]:.3f}." if len(pooled) else "")
    pair = f"{labels.get(ctx.run_id, ctx.run_id)} vs {labels.get(other, other)}"
    export.show_figure(figures.agreement_bars(rows, ctx.rois, labels.get(other, other), f"Method agreement · {pair}",
                                              ctx.provenance(int(rows.n_cases.max()), f"vs run {other}")),
                       ctx.name_parts("method-agreement", other), "agreement")
    named = rows.assign(**{"class": rows.target_id.map(lambda t: analytics.roi_name(ctx.rois, t))})
    export.show_table(named[["class", "spearman_mean", "spearman_low", "spearman_high", "spearman_median",
                             "n_cases"]], ctx.name_parts("method-agreement-table", other), "agreement-table")
    cells = data.method_disagreement(ctx.ref, ctx.run_id, other, 15)
    if len(cells):
        st.caption("The cells where they disagree most: mean absolute difference of the two runs' masses on the "
                   "same case.")
        cells = cells.assign(target=cells.target_id.map(lambda t: analytics.roi_name(ctx.rois, t)),
                             source=cells.source_id.map(lambda t: analytics.roi_name(ctx.rois, t)))
        export.show_table(cells[["target", "source", "mean_run", "mean_other", "difference", "mean_abs_difference"]]
                          .rename(columns={"mean_run": f"mean {ctx.method}", "mean_other": "mean other"}),
                          ctx.name_parts("method-disagreement", other), "disagreement")

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

st.subheader("Benchmark of attribution methods")
if summary.empty:
    st.info("No metric values for the evaluated cases of this cohort (only perturbation curves).")
else:
    st.caption("↑ higher is better, ↓ lower is better. Each cell: median (mean ± std) over the evaluated (case, "
               "class) pairs. The curves run on a grid of cubes, not the units KernelSHAP and the causal method "
               "fit; the random- and volume-ranking columns are what no explanation and region size alone reach "
               "on the same cases. Normalised AOPC/ABPC are left out where s(0) − s(K) is below 1 % of s(0).")
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
