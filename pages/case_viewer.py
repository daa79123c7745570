"""Case viewer: CT slices with prediction, ground truth and attribution overlays; local matrix; 3-D view."""
import streamlit as st

from dashboard import causal_views, compute, data, export, figures, slices, state, surfaces, ui
from dashboard.analytics import Roi

ctx = ui.context()
ui.page_header("Case viewer", ctx, intro="One case: CT slices through the chosen class's largest cross-sections "
               "with the prediction, the ground truth and the class's attribution; its local matrix next to the "
               "cohort mean; and a 3-D view of the predicted structures.")

artefacts = data.artifact_cases(ctx.ref, ctx.run_id)
meta = ctx.cases.set_index("case_id")


def case_text(case_id: str) -> str:
    row = meta.loc[case_id]
    age = "age ?" if row.age != row.age else f"{row.age:g} y"
    return (f"{case_id} · {row.dataset} · {row.sex if isinstance(row.sex, str) else 'sex ?'} · {age}"
            + (" · slices" if case_id in artefacts else ""))


controls = st.columns([3, 3, 2])
case = state.selectbox("Case", ctx.cases.case_id.tolist(), "case", container=controls[0],
                       format_func=case_text, what="case of this cohort")
classes = ctx.class_rois()
target = ui.roi_picker("Class", classes, "target", default=classes[1] if len(classes) > 1 else None,
                       container=controls[1])
kind = ui.kind_picker(ctx, container=controls[2])
row = meta.loc[case]
st.caption(f"Pathologies: {row.pathologies or 'none annotated'} · split: {row.split}")

st.subheader("Slices")
relative = artefacts.get(case)
path = data.resolve_artifact(ctx.ref, relative) if relative else None
if not artefacts:
    st.info("This run has no slice artefacts (e.g. imported published aggregates hold only the matrices), so "
            "there are no images to show; the local matrix below is available. Runs computed with "
            "`python -m agg2exp_core precompute` store slices.", icon=":material/image_not_supported:")
elif path is None:
    st.info(f"No readable slice artefact for case {case} in this run"
            + (f" (`{relative}` is missing)." if relative else "."), icon=":material/image_not_supported:")
else:
    artifact = slices.CaseArtifact(data.load_artifact(str(path), path.stat().st_mtime_ns))
    settings = st.columns([3, 3, 2, 2])
    preset = state.radio("CT window", [*slices.WINDOW_PRESETS, "custom"], "window", container=settings[0],
                         what="window preset")
    if preset == "custom":
        width = state.slider("Window width (HU)", "ww", 1.0, 4000.0, 400.0, 10.0, container=settings[0])
        level = state.slider("Window level (HU)", "wl", -1200.0, 2000.0, 40.0, 10.0, container=settings[0])
    else:
        width, level = slices.WINDOW_PRESETS[preset]
    show = settings[1].pills("Overlays", ["prediction", "ground truth", "attribution"], selection_mode="multi",
                             default=["prediction", "attribution"], key="overlays")
    opacity = state.slider("Overlay opacity", "opacity", 0.0, 1.0, 0.6, 0.05, container=settings[2])
    percentile = state.slider("Hide attribution below percentile", "pct", 0.0, 99.0, 80.0, 1.0,
                              container=settings[3])
    follow = state.toggle("Slices through the class's largest cross-sections", "follow", default=True,
                          container=settings[1])
    if "ground truth" in show and artifact.gt is None:
        st.caption("No ground truth in this artefact.")
    style = slices.OverlayStyle(width=width, level=level, show_pred="prediction" in show,
                                show_gt="ground truth" in show, show_attr="attribution" in show,
                                label_opacity=opacity * 0.6, attr_opacity=opacity, hide_below_percentile=percentile,
                                pred_outline="attribution" in show)
    channel = ctx.channel_of(target)
    stored = artifact.class_index(channel) if channel is not None else None
    columns = st.columns(3)
    for column, view in zip(columns, slices.VIEWS):
        axis = slices.VIEWS[view]
        size = artifact.ct.shape[axis]
        centre = int(stored[axis]) if stored is not None else size // 2
        if follow and stored is not None:
            index = centre
        else:
            index = state.slider(f"{view} slice", f"slice_{view}", 0, size - 1, centre, 1, container=column,
                                 integer=True)
        planes = slices.view_planes(artifact, view, index, channel)
        rgb = slices.compose(planes.hu, planes.pred, planes.gt, planes.attr, style)
        figure = figures.slice_image(rgb, planes.hu, slices.pixel_spacing(artifact.spacing, view),
                                     f"{view} {index} · {target.name}", f"{ctx.run_id} · case {case}",
                                     slices.CORNER_LABELS[view])
        export.show_figure(figure, [f"slice-{view}{index}", case, target.name, ctx.run_id], f"slice-{view}",
                           container=column, compact=True)
        if planes.note and style.show_attr:
            column.caption(planes.note)
    st.caption(f"Prediction in label colours (outlined while the attribution is shown), ground truth as white "
               f"outlines. Attribution of {target.name}: red positive, blue negative, symmetric scale per slice; "
               f"values below the {percentile:g}th percentile of |attribution| hidden. Window W{width:g}/L{level:g}.")

causal_views.case_section(ctx, case, target, slices.CaseArtifact(data.load_artifact(str(path), path.stat().st_mtime_ns))
                          if path is not None else None)  # signed ATE, components, relevance mask of causal runs

st.subheader("Local matrix vs cohort mean")
cohort_mean = compute.global_matrix_view(ctx.ref, ctx.run_id, ctx.cohort, kind, "group")
local = compute.case_matrix_view(ctx.ref, ctx.run_id, case, kind, cohort_mean)
left, right = st.columns(2)
export.show_figure(figures.matrix_heatmap(local.matrix, local.targets, local.sources,
                                          f"Case {case} ({data.KIND_LABELS[kind]})",
                                          ctx.provenance(1, f"case {case}"), data.KIND_LABELS[kind]),
                   [f"local-matrix-{case}", kind, ctx.run_id], "local", container=left, compact=True)
export.show_figure(figures.matrix_heatmap(cohort_mean.matrix, cohort_mean.targets, cohort_mean.sources,
                                          f"Cohort mean ({data.KIND_LABELS[kind]})", ctx.provenance(),
                                          data.KIND_LABELS[kind], counts=cohort_mean.counts),
                   ctx.name_parts("global-heatmap", kind, "group"), "local-mean", container=right, compact=True)

st.subheader("3-D view of the predicted structures")
if path is None:
    st.info("The 3-D view needs the case's slice artefact (predicted label map); none for this case.")
elif state.toggle("Show 3-D surfaces (pyvista)", "3d", default=False):
    names = {ctx.channel_of(r): r for r in classes}
    try:
        meshes = compute.case_surfaces(str(path), path.stat().st_mtime_ns)
        shown = [(Roi(names[l].roi_id, names[l].name, names[l].grp, slices.hex_color(l), True) if l in names else
                  Roi(-1, f"label {l}", "other", slices.hex_color(l), True), v, f) for l, v, f in meshes]
        export.show_figure(figures.surface_mesh(shown, f"Predicted structures · case {case}",
                                                f"{ctx.run_id} · case {case}"),
                           [f"surfaces-{case}", ctx.run_id], "surfaces")
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
