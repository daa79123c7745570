"""Case viewer: CT slices with prediction, ground truth and attribution overlays; local matrix; 3-D view."""
import functools
import json

import streamlit as st

from agg2exp_core.vocabulary import MASS_KIND_TITLES, SAMPLING_NOISE_LEVEL, SAMPLING_NOISE_Z
from dashboard import analytics, case_view, causal_views, compute, data, figures, ui
from dashboard.widgets import export, state
from dashboard.imaging import slices, surfaces
from dashboard.analytics import Roi

ctx = ui.context()
ui.page_header("Case viewer", ctx, intro="One case: CT slices through the chosen class's largest cross-sections "
               "with the prediction, the ground truth and the class's attribution; its local matrix next to the "
               "cohort mean; and a 3-D view of the predicted structures.")

artefacts = data.artifact_cases(ctx.ref, ctx.run_id)
meta = ctx.cases.set_index("case_id")


# One label per case, built once (a per-option lookup in ``meta`` takes seconds at 20,000 cases).
case_texts = {case_id: f"{case_id} · {dataset} · {sex if isinstance(sex, str) else 'sex ?'} · "
                       f"{'age ?' if age != age else f'{age:g} y'}" + (" · slices" if case_id in artefacts else "")
              for case_id, dataset, sex, age in zip(ctx.cases.case_id, ctx.cases.dataset, ctx.cases.sex,
                                                    ctx.cases.age)}

controls = st.columns([3, 3, 2])
case = state.selectbox("Case", list(case_texts), "case", container=controls[0],
                       format_func=case_texts.__getitem__, what="case of this cohort")
classes = ctx.class_rois()
target = ui.roi_picker("Class", classes, "target", default=classes[1] if len(classes) > 1 else None,
                       container=controls[1])
kind = ui.kind_picker(ctx, container=controls[2])
row = meta.loc[case]
st.caption(f"Pathologies: {row.pathologies or 'none annotated'} · split: {row.split}")
source = case_view.source_from_url(ctx)       # set by the Outliers page: the cell's source region
if source is not None:                        # it belongs to the case and class it was opened on
    if state.entering():
        st.session_state["_source_anchor"] = f"{case}|{target.name}"
    elif st.session_state.get("_source_anchor") != f"{case}|{target.name}":
        state.set_url("source", None)
        source = None
expected = data.case_dice_estimates(ctx.ref, ctx.run_id, case)
if len(expected):
    shown = case_view.expected_dice_table(expected, ctx.rois)
    mean = shown[shown["class"] == analytics.AVERAGE_TARGET_TITLE]
    flagged = shown[shown.likely_failure & (shown["class"] != analytics.AVERAGE_TARGET_TITLE)]
    st.caption(f"Expected Dice without labels (80 % interval): mean {mean.expected.iloc[0]:.3f} "
               f"[{mean.low.iloc[0]:.3f}, {mean.high.iloc[0]:.3f}]"
               + (f" · likely failures: {', '.join(flagged['class'])}" if len(flagged) else " · no likely failure"))
    with st.expander("Expected Dice per class"):
        export.show_table(shown, [f"expected-dice-{case}", ctx.run_id], "case-expected")

st.subheader("Slices")
relative = artefacts.get(case)
path = data.resolve_artifact(ctx.ref, relative) if relative else None
channel = ctx.channel_of(target)
params_json = json.dumps(ctx.run["params"] or {}, sort_keys=True, default=str)
SLICE_KEYS = {"axial": "slice_axial", "coronal": "slice_coronal", "sagittal": "slice_sagittal"}


def set_voxel(voxel) -> None:
    """Move the crosshair: every view's slice index from one voxel (x, y, z)."""
    for view, key in SLICE_KEYS.items():
        st.session_state[key] = int(voxel[slices.VIEWS[view]])


def jump_to_click(view: str) -> None:
    """A click on a slice (a hover point's customdata: x, y, z, ...) sets the other planes there."""
    try:
        custom = st.session_state[f"chart-slice-{view}"]["selection"]["points"][0]["customdata"]
        values = [custom[str(i)] for i in range(3)] if isinstance(custom, dict) else list(custom)[:3]
        set_voxel([int(round(float(v))) for v in values])
    except (KeyError, IndexError, TypeError, ValueError):
        pass


if not artefacts:
    st.info("This run has no slice artefacts (e.g. imported published aggregates hold only the matrices), so "
            "there are no images to show; the local matrix below is available. Runs computed with "
            "`python -m agg2exp_core precompute` store slices.", icon=":material/image_not_supported:")
elif path is None:
    st.info(f"No readable slice artefact for case {case} in this run"
            + (f" (`{relative}` is missing)." if relative else "."), icon=":material/image_not_supported:")
else:
    mtime = path.stat().st_mtime_ns
    artifact = case_view.artifact_of(str(path), mtime)
    settings = st.columns([3, 3, 2, 2])
    preset = state.radio("CT window", [*slices.WINDOW_PRESETS, "custom"], "window", container=settings[0],
                         format_func=slices.window_label, what="window preset")
    if preset == "custom":
        width = state.slider("Window width (HU)", "ww", 1.0, 4000.0, 400.0, 10.0, container=settings[0])
        level = state.slider("Window level (HU)", "wl", -1200.0, 2000.0, 40.0, 10.0, container=settings[0])
    else:
        width, level = slices.WINDOW_PRESETS[preset]
    show = settings[1].pills("Overlays", ["prediction", "ground truth", "attribution"], selection_mode="multi",
                             default=["prediction", "attribution"], key="overlays")
    opacity = state.slider("Overlay opacity", "opacity", 0.0, 1.0, 0.6, 0.05, container=settings[2])
    percentile = state.slider("Hide attribution below this percentile of |value|", "pct", 0.0, 99.0, 80.0, 1.0,
                              container=settings[3])
    if "ground truth" in show and artifact.gt is None:
        st.caption("No ground truth in this artefact.")
    style = slices.OverlayStyle(width=width, level=level, show_pred="prediction" in show,
                                show_gt="ground truth" in show, show_attr="attribution" in show,
                                label_opacity=opacity * 0.6, attr_opacity=opacity, hide_below_percentile=percentile,
                                pred_outline="attribution" in show)
    start = case_view.start_voxel(artifact, channel)
    if source is not None:
        centre = case_view.region_voxel(artifact, ctx.channel_of(source) if source.is_class else None, source.name)
        st.info(f"Opened on the cell {source.name} → {target.name}: the crosshair starts at the largest "
                f"cross-sections of {source.name}" + ("" if centre else " (not in this case's artefact; at "
                                                       f"{target.name} instead)") + ".", icon=":material/target:")
        start = centre or start
    anchor = f"{case}|{target.name}"
    if st.session_state.get("_case_viewer_anchor") not in (None, anchor) and not state.entering():
        set_voxel(start)        # another case or class: back to its largest cross-sections
    st.session_state["_case_viewer_anchor"] = anchor
    settings[1].button(f"Centre on the largest cross-sections of {target.name}", on_click=set_voxel, args=(start,),
                       icon=":material/center_focus_strong:")
    columns = st.columns(3)
    slots, voxel = {}, list(start)
    for column, view in zip(columns, slices.VIEWS):
        axis = slices.VIEWS[view]
        slots[view] = column.container()
        voxel[axis] = state.slider(f"{view} slice ({slices.AXIS_KEYS[axis]})", SLICE_KEYS[view], 0,
                                   artifact.ct.shape[axis] - 1, start[axis], 1, container=column, integer=True)
    provenance = f"{ctx.run_id} · case {case}"
    for view, slot in slots.items():
        shown = case_view.slice_view(str(path), mtime, view, tuple(voxel), channel, target.name, style, ctx.method,
                                     params_json, provenance)
        name_parts = [f"slice-{view}{voxel[slices.VIEWS[view]]}", case, target.name, ctx.run_id]
        config = dict(export.PLOTLY_CONFIG,
                      toImageButtonOptions={"filename": export.export_filename(name_parts, "png")[:-4]})
        slot.plotly_chart(shown.figure, key=f"chart-slice-{view}", config=config, width="stretch",
                          on_select=functools.partial(jump_to_click, view), selection_mode="points")
        export.figure_downloads(shown.figure, name_parts, f"slice-{view}",
                                slot.popover("Download", icon=":material/download:"), stacked=True)
        if shown.note:
            slot.caption(shown.note)
    _, meaning = slices.attribution_unit(ctx.method, ctx.run["params"] or {})
    st.caption(f"Click a point in one view to move the other two there (yellow crosshair). Physical aspect "
               f"ratio, {artifact.spacing[0]:g} × {artifact.spacing[1]:g} × {artifact.spacing[2]:g} mm voxels, "
               f"shown interpolated. Prediction in label colours (outlined while the attribution is shown), "
               f"ground truth as white outlines. Attribution of {target.name}, red positive, blue negative, on one "
               f"symmetric scale for the stored full-resolution planes (planes from the block-averaged volume "
               f"have their own, marked 'block means'); values below the {percentile:g}th percentile of |value| "
               f"hidden. {meaning} Window W{width:g} / L{level:g}.")

causal_views.case_section(ctx, case, target, slices.CaseArtifact(data.load_artifact(str(path), path.stat().st_mtime_ns))
                          if path is not None else None)  # signed ATE, components, relevance mask of causal runs

st.subheader("Local matrix vs cohort mean")
cohort_mean = compute.global_matrix_view(ctx.ref, ctx.run_id, ctx.cohort, kind, "group")
local = compute.case_matrix_view(ctx.ref, ctx.run_id, case, kind, cohort_mean)
noise = compute.case_noise_view(ctx.ref, ctx.run_id, case, kind, local)
left, right = st.columns(2)
local_figure = figures.matrix_heatmap(local, f"Case {case} ({MASS_KIND_TITLES[kind]})",
                                      ctx.provenance(1, f"case {case}"), MASS_KIND_TITLES[kind], with_counts=False)
if noise is not None:
    figures.add_sampling_noise(local_figure, noise.se, noise.n_samples)
export.show_figure(local_figure, [f"local-matrix-{case}", kind, ctx.run_id], "local", container=left, compact=True)
export.show_figure(figures.matrix_heatmap(cohort_mean, f"Cohort mean ({MASS_KIND_TITLES[kind]})", ctx.provenance(),
                                          MASS_KIND_TITLES[kind]),
                   ctx.name_parts("global-heatmap", kind, "group"), "local-mean", container=right, compact=True)
if noise is not None:
    st.caption(f"Sampling noise of this SmoothGrad case: each cell's standard error over its {noise.n_samples} "
               f"noise samples (delete-one jackknife) is in the hover; the largest is {noise.table.se.max():.4f}. "
               f"Intervals: mass ± {SAMPLING_NOISE_Z:.2f}·SE ({SAMPLING_NOISE_LEVEL:.0%} normal), clipped to [0, 1].")
    with st.expander("Sampling noise per cell"):
        export.show_table(noise.table, [f"sampling-noise-{case}", kind, ctx.run_id], "case-noise")

st.subheader("3-D view of the predicted structures")
if path is None:
    st.info("The 3-D view needs the case's slice artefact (predicted label map); none for this case.")
elif state.toggle("Show 3-D surfaces (pyvista)", "3d", default=False):
    colour = state.radio("Surface colour", ["attribution", "labels"], "surface_colour",
                         format_func=lambda o: f"attribution of {target.name}" if o == "attribution" else
                         "label colours", what="surface colouring")
    rois_by_channel = tuple((c, Roi(r.roi_id, r.name, r.grp, slices.hex_color(c), True))
                            for r in classes if (c := ctx.channel_of(r)) is not None)
    try:
        surface = case_view.surface_view(str(path), path.stat().st_mtime_ns, rois_by_channel, channel, target.name,
                                         colour == "attribution", ctx.method, params_json,
                                         f"Predicted structures · case {case}", f"{ctx.run_id} · case {case}")
        export.show_figure(surface.figure, [f"surfaces-{case}", target.name, ctx.run_id], "surfaces")
        if surface.note:
            st.caption(surface.note)
    except surfaces.SurfaceUnavailable as err:
        st.info(f"No 3-D view here: {err}.", icon=":material/view_in_ar:")
    if st.button("Off-screen snapshot with pyvista", icon=":material/photo_camera:"):
        try:
            png = compute.case_snapshot(str(path), path.stat().st_mtime_ns)
            st.image(png, caption=f"pyvista off-screen render · case {case}")
            st.download_button("PNG", png, file_name=f"agg2exp_surfaces-{case}_{ctx.run_id}_pyvista.png",
                               mime="image/png", on_click="ignore", icon=":material/download:")
        except surfaces.SurfaceUnavailable as err:
            st.info(f"pyvista cannot render off-screen here: {err}.", icon=":material/view_in_ar:")
