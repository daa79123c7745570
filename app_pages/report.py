"""Report: the current view (run, cohort filter, class, cases) as one PDF and one HTML file."""
import functools

import streamlit as st

from dashboard import report, ui
from dashboard.views import class_distributions, report as report_view
from dashboard.widgets import export, state

ctx = ui.context()
ui.page_header("Report", ctx, intro="One click gives a report of the current view: provenance (store, run, model "
               "checksum, method parameters, cohort filter, date), the global heat map, the class's distributions, "
               "the outliers and the chosen cases' slices, each with the numbers behind it.")

classes = ctx.class_rois()
controls = st.columns([2, 2, 2])
target = ui.roi_picker("Class", classes, "target", default=class_distributions.default_target(classes),
                       container=controls[0])
kind = ui.kind_picker(ctx, container=controls[1])
order = ui.order_picker("Heat-map order", container=controls[2])

with_slices = report_view.cases_with_slices(ctx)
chosen = st.multiselect("Cases shown slice by slice (the case viewer's case, then the top outliers of the class)",
                        with_slices, default=report_view.suggested_cases(ctx, target, state.url_value("case")),
                        max_selections=8, key="report_cases",
                        placeholder="no case" if with_slices else "no case of this run has slices")
settings = st.columns([3, 2])
window = ui.window_picker("CT window of the case slices", container=settings[0])
percentile = ui.percentile_picker(container=settings[1])

request = report.ReportRequest(run_id=ctx.run_id, cohort=ctx.cohort, target=target.name, kind=kind,
                               case_ids=tuple(chosen), order=order, window=window, percentile=percentile,
                               store_label=ctx.store_label)
st.markdown(report_view.contents_line(target, chosen))
name_parts = ctx.name_parts("report", target.name)
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
