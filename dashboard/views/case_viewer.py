"""The case viewer's views: a case's line of metadata, its three slices through a class, and its local
matrix next to the cohort mean (the report's case pages show the same)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.store.artifacts import ArtifactUnreadable
from agg2exp_core.vocabulary import MASS_KIND_TITLES
from dashboard import case_view, compute, data, figures
from dashboard.analytics import AVERAGE_TARGET_TITLE, Roi
from dashboard.context import ViewContext
from dashboard.imaging import artefact, slices
from dashboard.matrices import MatrixView


def case_line(case_id: str, dataset, sex, age) -> str:
    """'case · dataset · sex · age' as the case picker and the report show it."""
    return (f"{case_id} · {dataset} · {sex if isinstance(sex, str) else 'sex ?'} · "
            f"{'age ?' if age != age else f'{age:g} y'}")


def case_lines(ctx: ViewContext, with_slices: set[str] = frozenset()) -> dict[str, str]:
    """One line per case of the cohort, built once (a lookup per option takes seconds at 20,000 cases)."""
    cases = ctx.cases
    return {c: case_line(c, d, s, a) + (" · slices" if c in with_slices else "")
            for c, d, s, a in zip(cases.case_id, cases.dataset, cases.sex, cases.age)}


def run_case_line(ctx: ViewContext, case_id: str) -> str:
    """A case's line from the whole run (it need not pass the filter)."""
    cases = data.run_cases(ctx.ref, ctx.run_id).set_index("case_id")
    if case_id not in cases.index:
        return f"case {case_id}"
    row = cases.loc[case_id]
    return case_line(case_id, row.dataset, row.sex, row.age)


@dataclass
class CaseSlices:
    """The three views through a class's largest cross-sections (empty without a slice artefact)."""

    figures: dict[str, go.Figure]
    note: str


def case_slices(ctx: ViewContext, case_id: str, target: Roi, window: tuple[str, float, float],
                percentile: float) -> CaseSlices:
    """Static slices (no crosshair, no click points): prediction outlined, ground truth in white."""
    opened = open_artefact(ctx, case_id)
    if opened.artifact is None:
        unreadable = opened.problem.startswith("Slice artefact unreadable")
        return CaseSlices({}, opened.problem if unreadable else "No slice artefact for this case in this run.")
    channel = ctx.channel_of(target)
    path, mtime, artifact = opened.path, opened.mtime_ns, opened.artifact
    voxel = artefact.start_voxel(artifact, channel)
    style = slices.OverlayStyle(width=window[1], level=window[2], show_gt=artifact.gt is not None,
                                hide_below_percentile=percentile, pred_outline=True, label_opacity=0.36,
                                attr_opacity=0.6)
    params_json = json.dumps(ctx.params, sort_keys=True, default=str)
    shown = {view: case_view.slice_view(str(path), mtime, view, voxel, channel, target.name, style, ctx.method,
                                        params_json, f"{ctx.run_id} · case {case_id}", crosshair=False,
                                        clickable=False).figure
             for view in slices.VIEWS}
    unit = slices.attribution_unit(ctx.method, ctx.params)[1]
    note = (f"Slices through the largest cross-sections of {target.name}; prediction outlined in label colours, "
            f"ground truth in white; window {window_text(window)}. {unit}")
    return CaseSlices(shown, note)


def window_text(window: tuple[str, float, float]) -> str:
    name, width, level = window
    return f"{name} · W{width:g} / L{level:g}".replace("L-", "L−")


@dataclass
class LocalMatrix:
    """A case's local matrix in the cohort mean's order, and the cohort mean itself."""

    local: MatrixView
    cohort_mean: MatrixView
    local_figure: go.Figure
    mean_figure: go.Figure
    noise: compute.CaseNoise | None

    def row(self, target: Roi) -> pd.DataFrame:
        """The case's row e(b → target) next to the cohort mean, sources as columns (the report's table)."""
        i = next((k for k, t in enumerate(self.cohort_mean.targets) if t.roi_id == target.roi_id), None)
        local = self.local.matrix[i] if i is not None else np.full(len(self.local.sources), np.nan)
        mean = self.cohort_mean.matrix[i] if i is not None else np.full(len(self.local.sources), np.nan)
        frame = pd.DataFrame([["this case", *local], ["cohort mean", *mean]],
                             columns=[f"e(b → {target.name})"] + [s.name for s in self.cohort_mean.sources])
        return frame.dropna(axis=1, how="all")          # sources without a value for this class


def local_matrix(ctx: ViewContext, case_id: str, kind: str) -> LocalMatrix:
    label = MASS_KIND_TITLES[kind]
    cohort_mean = compute.global_matrix_view(ctx.ref, ctx.run_id, ctx.cohort, kind, "group")
    local = compute.case_matrix_view(ctx.ref, ctx.run_id, case_id, kind, cohort_mean)
    noise = compute.case_noise_view(ctx.ref, ctx.run_id, case_id, kind, local)
    local_figure = figures.matrix_heatmap(local, f"Case {case_id} ({label})", ctx.provenance(1, f"case {case_id}"),
                                          label, with_counts=False)
    if noise is not None:
        figures.add_sampling_noise(local_figure, noise.se, noise.n_samples)
    mean_figure = figures.matrix_heatmap(cohort_mean, f"Cohort mean ({label})", ctx.provenance(), label)
    return LocalMatrix(local, cohort_mean, local_figure, mean_figure, noise)


# --- the case viewer page's pieces ---------------------------------------------------------------

def case_details(ctx: ViewContext, case_id: str) -> str:
    row = ctx.cases.set_index("case_id").loc[case_id]
    return f"Pathologies: {row.pathologies or 'none annotated'} · split: {row.split}"


@dataclass
class ExpectedDice:
    table: pd.DataFrame
    caption: str


def expected_dice(ctx: ViewContext, case_id: str) -> ExpectedDice | None:
    """The case's expected Dice per class (no labels used), with the likely failures named."""
    estimates = data.case_dice_estimates(ctx.ref, ctx.run_id, case_id)
    if estimates.empty:
        return None
    shown = case_view.expected_dice_table(estimates, ctx.rois)
    mean = shown[shown["class"] == AVERAGE_TARGET_TITLE]
    flagged = shown[shown.likely_failure & (shown["class"] != AVERAGE_TARGET_TITLE)]
    caption = (f"Expected Dice without labels (80 % interval): mean {mean.expected.iloc[0]:.3f} "
               f"[{mean.low.iloc[0]:.3f}, {mean.high.iloc[0]:.3f}]"
               + (f" · likely failures: {', '.join(flagged['class'])}" if len(flagged) else " · no likely failure"))
    return ExpectedDice(shown, caption)


@dataclass
class Artefact:
    """A case's slice artefact as the viewer opens it (``problem``: why there is none)."""

    problem: str = ""
    path: str = ""
    mtime_ns: int = 0
    artifact: artefact.CaseArtifact | None = None


def open_artefact(ctx: ViewContext, case_id: str) -> Artefact:
    artefacts = data.artifact_cases(ctx.ref, ctx.run_id)
    if not artefacts:
        return Artefact("This run has no slice artefacts (e.g. imported published aggregates hold only the "
                        "matrices), so there are no images to show; the local matrix below is available. Runs "
                        "computed with `python -m agg2exp_core precompute` store slices.")
    relative = artefacts.get(case_id)
    path = data.resolve_artifact(ctx.ref, relative, ctx.run_id) if relative else None
    if path is None:
        return Artefact(f"No readable slice artefact for case {case_id} in this run"
                        + (f" (`{relative}` is missing, or lies outside the store's folder and the artefact "
                           "roots the dashboard allows: docs/DEPLOYMENT.md)." if relative else "."))
    try:  # a truncated or empty file (a crash, a full disk, a copy cut short): say so, the page goes on
        mtime = path.stat().st_mtime_ns
        return Artefact("", str(path), mtime, case_view.artifact_of(str(path), mtime))
    except (ArtifactUnreadable, OSError) as err:
        return Artefact(f"Slice artefact unreadable for case {case_id}: {err}. The rest of the page is shown.")


WINDOWS = [*slices.WINDOW_PRESETS, "custom"]
OVERLAYS = ["prediction", "ground truth", "attribution"]


def overlay_style(window: tuple[str, float, float], overlays: list[str], opacity: float,
                  percentile: float) -> slices.OverlayStyle:
    return slices.OverlayStyle(width=window[1], level=window[2], show_pred="prediction" in overlays,
                               show_gt="ground truth" in overlays, show_attr="attribution" in overlays,
                               label_opacity=opacity * 0.6, attr_opacity=opacity, hide_below_percentile=percentile,
                               pred_outline="attribution" in overlays)


@dataclass(frozen=True)
class Start:
    """Where the crosshair starts: the class's largest cross-sections, or those of a linked source region."""

    voxel: tuple[int, int, int]
    note: str = ""


def start(ctx: ViewContext, shown: Artefact, target: Roi, source: Roi | None) -> Start:
    voxel = artefact.start_voxel(shown.artifact, ctx.channel_of(target))
    if source is None:
        return Start(voxel)
    centre = artefact.region_voxel(shown.artifact, ctx.channel_of(source) if source.is_class else None, source.name)
    note = (f"Opened on the cell {source.name} → {target.name}: the crosshair starts at the largest cross-sections of "
            f"{source.name}" + ("" if centre else f" (not in this case's artefact; at {target.name} instead)") + ".")
    return Start(centre or voxel, note)


def slice_figure(ctx: ViewContext, shown: Artefact, case_id: str, view: str, voxel, target: Roi,
                 style: slices.OverlayStyle) -> case_view.SliceView:
    """One interactive view (crosshair, clickable points) through ``voxel``."""
    return case_view.slice_view(shown.path, shown.mtime_ns, view, tuple(voxel), ctx.channel_of(target), target.name,
                                style, ctx.method, json.dumps(ctx.params, sort_keys=True, default=str),
                                f"{ctx.run_id} · case {case_id}")


def slices_caption(ctx: ViewContext, shown: Artefact, target: Roi, percentile: float,
                   window: tuple[str, float, float]) -> str:
    spacing = shown.artifact.spacing
    meaning = slices.attribution_unit(ctx.method, ctx.params)[1]
    return (f"Click a point in one view to move the other two there (yellow crosshair). Physical aspect "
            f"ratio, {spacing[0]:g} × {spacing[1]:g} × {spacing[2]:g} mm voxels, "
            f"shown interpolated. Prediction in label colours (outlined while the attribution is shown), "
            f"ground truth as white outlines. Attribution of {target.name}, red positive, blue negative, on one "
            f"symmetric scale for the stored full-resolution planes (planes from the block-averaged volume "
            f"have their own, marked 'block means'); values below the {percentile:g}th percentile of |value| "
            f"hidden. {meaning} Window W{window[1]:g} / L{window[2]:g}.")


AXES = slices.VIEWS                 # view name -> the volume axis it cuts
AXIS_KEYS = slices.AXIS_KEYS


def cases_with_slices(ctx: ViewContext) -> list[str]:
    artefacts = data.artifact_cases(ctx.ref, ctx.run_id)
    return [c for c in ctx.cases.case_id if c in artefacts]
