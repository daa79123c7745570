"""Case viewer: CT slices with prediction, ground truth and attribution overlays; local matrix; 3-D view."""
import functools

import streamlit as st

from agg2exp_core.vocabulary import SAMPLING_NOISE_LEVEL, SAMPLING_NOISE_Z
from dashboard import ui
from dashboard.views import case_surfaces, case_viewer, class_distributions
from dashboard.widgets import causal, export, state

ctx = ui.context()
ui.page_header("Case viewer", ctx, intro="One case: CT slices through the chosen class's largest cross-sections "
               "with the prediction, the ground truth and the class's attribution; its local matrix next to the "
               "cohort mean; and a 3-D view of the predicted structures.")

shown_cases = case_viewer.case_lines(ctx, set(case_viewer.cases_with_slices(ctx)))
controls = st.columns([3, 3, 2])
case = state.selectbox("Case", list(shown_cases), "case", container=controls[0],
                       format_func=shown_cases.__getitem__, what="case of this cohort")
classes = ctx.class_rois()
target = ui.roi_picker("Class", classes, "target", default=class_distributions.default_target(classes),
                       container=controls[1])
kind = ui.kind_picker(ctx, container=controls[2])
st.caption(case_viewer.case_details(ctx, case))
source = ui.source_from_url(ctx)              # set by the Outliers page: the cell's source region
if source is not None:                        # it belongs to the case and class it was opened on
    if state.entering():
        st.session_state["_source_anchor"] = f"{case}|{target.name}"
    elif st.session_state.get("_source_anchor") != f"{case}|{target.name}":
        state.set_url("source", None)
        source = None
expected = case_viewer.expected_dice(ctx, case)
if expected is not None:
    st.caption(expected.caption)
    with st.expander("Expected Dice per class"):
        export.show_table(expected.table, [f"expected-dice-{case}", ctx.run_id], "case-expected")

st.subheader("Slices")
opened = case_viewer.open_artefact(ctx, case)
SLICE_KEYS = {"axial": "slice_axial", "coronal": "slice_coronal", "sagittal": "slice_sagittal"}


def set_voxel(voxel) -> None:
    """Move the crosshair: every view's slice index from one voxel (x, y, z)."""
    for view, key in SLICE_KEYS.items():
        st.session_state[key] = int(voxel[case_viewer.AXES[view]])


def jump_to_click(view: str) -> None:
    """A click on a slice (a hover point's customdata: x, y, z, ...) sets the other planes there."""
    try:
        custom = st.session_state[f"chart-slice-{view}"]["selection"]["points"][0]["customdata"]
        values = [custom[str(i)] for i in range(3)] if isinstance(custom, dict) else list(custom)[:3]
        set_voxel([int(round(float(v))) for v in values])
    except (KeyError, IndexError, TypeError, ValueError):
        pass


if opened.problem:
    st.info(opened.problem, icon=":material/image_not_supported:")
else:
    artifact = opened.artifact
    settings = st.columns([3, 3, 2, 2])
    window = ui.window_picker(container=settings[0])
    show = settings[1].pills("Overlays", case_viewer.OVERLAYS, selection_mode="multi",
                             default=["prediction", "attribution"], key="overlays")
    opacity = state.slider("Overlay opacity", "opacity", 0.0, 1.0, 0.6, 0.05, container=settings[2])
    percentile = ui.percentile_picker(container=settings[3])
    if "ground truth" in show and artifact.gt is None:
        st.caption("No ground truth in this artefact.")
    style = case_viewer.overlay_style(window, show, opacity, percentile)
    start = case_viewer.start(ctx, opened, target, source)
    if start.note:
        st.info(start.note, icon=":material/target:")
    anchor = f"{case}|{target.name}"
    if st.session_state.get("_case_viewer_anchor") not in (None, anchor) and not state.entering():
        set_voxel(start.voxel)        # another case or class: back to its largest cross-sections
    st.session_state["_case_viewer_anchor"] = anchor
    settings[1].button(f"Centre on the largest cross-sections of {target.name}", on_click=set_voxel,
                       args=(start.voxel,), icon=":material/center_focus_strong:")
    columns = st.columns(3)
    slots, voxel = {}, list(start.voxel)
    for column, view in zip(columns, case_viewer.AXES):
        axis = case_viewer.AXES[view]
        slots[view] = column.container()
        voxel[axis] = state.slider(f"{view} slice ({case_viewer.AXIS_KEYS[axis]})", SLICE_KEYS[view], 0,
                                   artifact.ct.shape[axis] - 1, start.voxel[axis], 1, container=column, integer=True)
    for view, slot in slots.items():
        shown = case_viewer.slice_figure(ctx, opened, case, view, voxel, target, style)
        name_parts = [f"slice-{view}{voxel[case_viewer.AXES[view]]}", case, target.name, ctx.run_id]
        config = dict(export.PLOTLY_CONFIG,
                      toImageButtonOptions={"filename": export.export_filename(name_parts, "png")[:-4]})
        slot.plotly_chart(shown.figure, key=f"chart-slice-{view}", config=config, width="stretch",
                          on_select=functools.partial(jump_to_click, view), selection_mode="points")
        export.figure_downloads(shown.figure, name_parts, f"slice-{view}",
                                slot.popover("Download", icon=":material/download:"), stacked=True)
        if shown.note:
            slot.caption(shown.note)
    st.caption(case_viewer.slices_caption(ctx, opened, target, percentile, window))

causal.case_section(ctx, case, target, opened.artifact)  # signed ATE, components, relevance mask of causal runs

st.subheader("Local matrix vs cohort mean")
local = case_viewer.local_matrix(ctx, case, kind)
left, right = st.columns(2)
export.show_figure(local.local_figure, [f"local-matrix-{case}", kind, ctx.run_id], "local", container=left,
                   compact=True)
export.show_figure(local.mean_figure, ctx.name_parts("global-heatmap", kind, "group"), "local-mean", container=right,
                   compact=True)
if local.noise is not None:
    noise = local.noise
    st.caption(f"Sampling noise of this SmoothGrad case: each cell's standard error over its {noise.n_samples} "
               f"noise samples (delete-one jackknife) is in the hover; the largest is {noise.table.se.max():.4f}. "
               f"Intervals: mass ± {SAMPLING_NOISE_Z:.2f}·SE ({SAMPLING_NOISE_LEVEL:.0%} normal), clipped to [0, 1].")
    with st.expander("Sampling noise per cell"):
        export.show_table(noise.table, [f"sampling-noise-{case}", kind, ctx.run_id], "case-noise")

st.subheader("3-D view of the predicted structures")
if opened.artifact is None:
    st.info("The 3-D view needs the case's slice artefact (predicted label map); none for this case.")
elif state.toggle("Show 3-D surfaces (pyvista)", "3d", default=False):
    colour = state.radio("Surface colour", ["attribution", "labels"], "surface_colour",
                         format_func=lambda o: f"attribution of {target.name}" if o == "attribution" else
                         "label colours", what="surface colouring")
    surface = case_surfaces.case_surfaces(ctx, opened, case, target, colour == "attribution")
    if surface.problem:
        st.info(surface.problem, icon=":material/view_in_ar:")
    else:
        export.show_figure(surface.view.figure, [f"surfaces-{case}", target.name, ctx.run_id], "surfaces")
        if surface.view.note:
            st.caption(surface.view.note)
    if st.button("Off-screen snapshot with pyvista", icon=":material/photo_camera:"):
        snapshot = case_surfaces.snapshot(ctx, opened, case)
        if snapshot.problem:
            st.info(snapshot.problem, icon=":material/view_in_ar:")
        else:
            st.image(snapshot.png, caption=f"pyvista off-screen render · case {case}")
            st.download_button("PNG", snapshot.png, file_name=snapshot.file_name, mime="image/png",
                               on_click="ignore", icon=":material/download:")
