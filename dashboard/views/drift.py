"""Drift: does a cohort's explanation differ from the reference cohort's, class by class?"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.vocabulary import AVERAGE_TARGET, VOLUME_TARGET
from dashboard import compute, data, figures
from dashboard.context import ViewContext
from dashboard.views.common import target_name, with_case_fields, with_names

FILTERED = "filter"          # the URL value of "the cohort of the sidebar's filter"
CASES_SHOWN = 25


@dataclass
class DriftSetup:
    """The stored drift tests of a run: reference, the datasets tested, what the choices are."""

    tests: pd.DataFrame
    reference: str = ""
    choices: list[str] | None = None
    caption: str = ""

    def choice_text(self, choice: str) -> str:
        return "the filtered cohort" if choice == FILTERED else f"dataset {choice}"


def setup(ctx: ViewContext) -> DriftSetup:
    tests = data.drift_tests(ctx.ref, ctx.run_id)
    if tests.empty:
        return DriftSetup(tests)
    reference = str(tests.reference.iloc[0])
    caption = (f"Reference: dataset {reference} ({int(tests.n_ref.max())} cases). Stored tests use "
               f"{int(tests.n_permutations.iloc[0])} permutations per class; the filtered cohort is tested live "
               "(1000 permutations; the reference's own cases are left out of it).")
    return DriftSetup(tests, reference, sorted(tests.dataset.unique()) + [FILTERED], caption)


@dataclass
class ClassDrift:
    label: str
    empty: str = ""
    heading: str = ""
    caption: str = ""
    figure: go.Figure | None = None
    table: pd.DataFrame | None = None
    cells_figure: go.Figure | None = None
    cells: pd.DataFrame | None = None           # None: not a stored dataset; empty: none stored


def class_drift(ctx: ViewContext, drift: DriftSetup, choice: str) -> ClassDrift:
    reference = drift.reference
    if choice == FILTERED:
        shown = compute.cohort_drift(ctx.ref, ctx.run_id, ctx.cohort, reference)
        label = f"filtered cohort ({ctx.cohort_text})"
        if shown.empty:
            return ClassDrift(label, "The filtered cohort needs at least 2 cases outside the reference dataset.")
    else:
        shown, label = drift.tests[drift.tests.dataset == choice], f"dataset {choice}"
    control = shown[shown.target_id == VOLUME_TARGET]      # the volume-share control row is not a class
    shown = shown[shown.target_id != VOLUME_TARGET]
    out = ClassDrift(label, heading=f"Classes: {label} vs {reference}",
                     caption=f"{int((shown.q_value < 0.05).sum())} of {len(shown)} classes drift at q < 0.05."
                             + volume_caption(shown, control))
    out.figure = figures.drift_bars(shown, ctx.class_rois(), f"Explanation drift per class · {label} vs {reference}",
                                    ctx.provenance(int(shown.n_new.max()),
                                                   f"reference {reference} (n = {int(shown.n_ref.max())})"))
    raw = ["p_value_raw"] if "p_value_raw" in shown else []   # the live test of a filtered cohort has none
    out.table = with_names(ctx, shown, **{"class": "target_id"})[["class", "statistic", "p_value", "q_value", *raw,
                                                                   "n_ref", "n_new"]].rename(
        columns={"p_value_raw": "p raw mass"})
    if choice != FILTERED:
        cells = data.drift_cells(ctx.ref, ctx.run_id, choice, 20)
        out.cells = cells
        if len(cells):
            out.cells_figure = figures.effect_bars(cells, ctx.rois, f"Largest cell shifts · {label} vs {reference}",
                                                   ctx.provenance(extra="cells with q < 0.05 first"))
            out.cells = with_names(ctx, cells, target="target_id", source="source_id")[
                ["target", "source", "mean_ref", "mean_new", "difference", "effect_size", "p_value", "q_value"]]
    return out


def volume_caption(tests: pd.DataFrame, control: pd.DataFrame) -> str:
    """What the tests ran on, and whether the region volume shares alone differ (the control row)."""
    if "kind" not in tests or not len(tests) or not (tests.kind == "lift").all():
        return ""
    text = (" Tested on the volume-adjusted mass (lift), so a change of region volumes alone (field of view, body "
            "size) does not read as drift; 'p raw mass' is the same test on raw mass.")
    return text + (f" Volume shares alone: p = {control.p_value.iloc[0]:.3g}." if len(control) else "")


def case_targets(ctx: ViewContext) -> dict[int, str]:
    """The classes whose drift scores can be ranked (the average over classes first), with their names."""
    targets = [AVERAGE_TARGET] + [r.roi_id for r in ctx.class_rois()]
    return {t: target_name(ctx, t) for t in targets}


@dataclass
class CaseDrift:
    cases: pd.DataFrame
    figure: go.Figure | None = None


def case_drift(ctx: ViewContext, target_id: int) -> CaseDrift:
    cases = data.drift_cases(ctx.ref, ctx.run_id, ctx.cohort, target_id, CASES_SHOWN)
    if cases.empty:
        return CaseDrift(cases)
    name = target_name(ctx, target_id)
    cases = with_case_fields(ctx, cases)   # the table and its CSV carry the cases' metadata fields
    return CaseDrift(cases, figures.score_bars(cases, "score", f"Cases furthest from the reference · {name}",
                                               ctx.provenance(len(cases), f"the {CASES_SHOWN} highest scores of "
                                                                          "the cohort"), "drift score"))
