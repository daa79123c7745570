"""Report: the current view (run, cohort filter, class, cases) as one PDF and one HTML file."""
import functools

import streamlit as st

from dashboard import data, filters, report, ui
from dashboard.widgets import export, state
from dashboard.imaging import slices

ctx = ui.context()
ui.page_header("Report", ctx, intro="One click gives a report of the current view: provenance (store, run, model "
               "checksum, method parameters, cohort filter, date), the global heat map, the class's distributions, "
               "the outliers and the chosen cases' slices, each with the numbers behind it.")

classes = ctx.class_rois()
controls = st.columns([2, 2, 2])
target = ui.roi_picker("Class", classes, "target", default=classes[1] if len(classes) > 1 else None,
                       container=controls[0])
kind = ui.kind_picker(ctx, container=controls[1])
order = state.radio("Heat-map order", ["group", "cluster", "id"], "order", container=controls[2], what="order",
                    format_func={"group": "anatomical group", "cluster": "hierarchical clustering",
                                 "id": "label id"}.get)

artefacts = data.artifact_cases(ctx.ref, ctx.run_id)
with_slices = [c for c in ctx.cases.case_id if c in artefacts]
suggested = [c for c in [state.url_value("case")] if c in with_slices]
if target.roi_id in data.anomaly_targets(ctx.ref, ctx.run_id):
    ranking = data.anomaly_ranking(ctx.ref, ctx.run_id, ctx.cohort, target.roi_id)
    suggested += [c for c in ranking.case_id if c in artefacts and c not in suggested]
suggested = (suggested or with_slices)[:3]
chosen = st.multiselect("Cases shown slice by slice (the case viewer's case, then the top outliers of the class)",
                        with_slices, default=suggested, max_selections=8, key="report_cases",
                        placeholder="no case" if with_slices else "no case of this run has slices")
settings = st.columns([3, 2])
preset = state.radio("CT window of the case slices", [*slices.WINDOW_PRESETS, "custom"], "window",
                     container=settings[0], format_func=slices.window_label, what="window preset")
if preset == "custom":
    width = state.slider("Window width (HU)", "ww", 1.0, 4000.0, 400.0, 10.0, container=settings[0])
    level = state.slider("Window level (HU)", "wl", -1200.0, 2000.0, 40.0, 10.0, container=settings[0])
else:
    width, level = slices.WINDOW_PRESETS[preset]
percentile = state.slider("Hide attribution below this percentile of |value|", "pct", 0.0, 99.0, 80.0, 1.0,
                          container=settings[1])

request = report.ReportRequest(run_id=ctx.run_id, cohort=ctx.cohort, target=target.name, kind=kind,
                               case_ids=tuple(chosen), order=order, window=(preset, float(width), float(level)),
                               percentile=float(percentile), store_label=ctx.store_label)
st.markdown("The report holds, one page each: provenance · global heat map · its values · distributions of "
            f"**{target.name}** · their summary · anomaly vs Dice · outlier ranking"
            + "".join(f" · case **{c}**" for c in chosen) + f" ({7 + len(chosen)} pages, A4 landscape).")
name_parts = ["report", target.name, ctx.run_id, filters.filter_slug(ctx.cohort)]
buttons = st.columns([1, 1, 4])
if report.pdf_available():
    buttons[0].download_button("Report (PDF)", data=functools.partial(report.report_pdf, ctx.ref, request),
                               file_name=export.export_filename(name_parts, "pdf"), mime="application/pdf",
                               on_click="ignore", type="primary", icon=":material/picture_as_pdf:", key="dl-report-pdf")
else:
    buttons[2].caption("The PDF needs Chromium on the server (`apt-get install chromium`); the HTML report has "
                       "interactive figures instead.")
buttons[1].download_button("Report (HTML)", data=functools.partial(report.report_html_bytes, ctx.ref, request),
                           file_name=export.export_filename(name_parts, "html"), mime="text/html", on_click="ignore",
                           icon=":material/html:", key="dl-report-html")
buttons[2].caption("Building takes a few seconds per figure (static export with kaleido); the second download "
                   "of the same view is instant.")

st.subheader("Provenance (the report's first page)")
export.show_table(report.provenance_preview(ctx.ref, request), name_parts + ["provenance"], "report-provenance",
                  width="stretch")
