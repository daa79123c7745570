"""Sanity checks on the Methods page (and in the report): does each run's explanation change when the model
is destroyed? One randomisation curve per method with its baseline band, and pass/fail per class.

The checks run on a few cases chosen when they were computed (``agg2exp sanity --cases``), not on the
cohort: the sidebar's filter does not apply, and the caption says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.vocabulary import SANITY_CHECKS, SANITY_METRICS
from dashboard import analytics, data, figures
from dashboard.context import ViewContext
from dashboard.views.common import with_names

METRICS = SANITY_METRICS  # stored name -> title (the page's choice)
DEFAULT_METRIC = "spearman_abs"
EMPTY = ("No sanity checks in this store yet. Compute them for a run with `python -m agg2exp_core sanity "
         "--help` (cascading model randomisation, random-logit and edge-detector controls); they appear here.")


@dataclass
class SanityView:
    metric: str
    empty: str = ""
    figure: go.Figure | None = None
    curves: pd.DataFrame | None = None      # the curves' numbers (CSV)
    verdicts: pd.DataFrame | None = None    # pass / fail per run, check and class
    passed: dict[str, tuple[int, int]] = field(default_factory=dict)  # run -> (classes passing MPRT, classes)
    caption: str = ""


def _labels(ctx: ViewContext) -> dict[str, str]:
    return {r.run_id: analytics.method_label(r.method, r.params) for r in ctx.runs.itertuples()}


def _mark(passed) -> str:
    return "—" if pd.isna(passed) else ("pass" if passed else "FAIL")


def pass_counts(verdicts: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per run: classes that pass the cascading randomisation, of the classes checked."""
    mprt = verdicts[verdicts.check == "mprt"]
    return {run_id: (int((part.passed == True).sum()), len(part))  # noqa: E712 - NULL counts as not passing
            for run_id, part in mprt.groupby("run_id")}


def has_checks(ctx: ViewContext) -> bool:
    return bool(data.sanity_runs(ctx.ref))


def sanity(ctx: ViewContext, metric: str = DEFAULT_METRIC) -> SanityView:
    if not has_checks(ctx):
        return SanityView(metric, EMPTY)
    curves = data.sanity_curves(ctx.ref, metric)
    verdicts = data.sanity_verdicts(ctx.ref, metric)
    labels = _labels(ctx)
    passed = pass_counts(verdicts)
    legend = {run: f"{labels.get(run, run)} · {p} of {n} classes pass" for run, (p, n) in passed.items()}
    n_cases = int(verdicts.n_cases.max()) if len(verdicts) else 0
    figure = figures.randomisation_curves(
        curves, legend, SANITY_METRICS[metric], "Sanity check: cascading model-parameter randomisation",
        f"{len(passed)} run(s) · {n_cases} case(s) checked (not filtered by the cohort) · {ctx.ref.name}")
    table = with_names(ctx, verdicts, **{"class": "class_id"}).assign(
        method=lambda f: f.run_id.map(lambda r: labels.get(r, r)), check=lambda f: f.check.map(SANITY_CHECKS),
        verdict=lambda f: f.passed.map(_mark))[["method", "run_id", "check", "class", "value", "baseline", "verdict",
                                                 "n_cases"]]
    caption = (f"{SANITY_METRICS[metric]} between the trained model's attributions and those of copies whose layers "
               "are re-initialised from the output towards the input (the last point: every layer). The band is "
               "each method's baseline: the same similarity between the trained model's maps of two unrelated "
               "classes. A class passes when the fully randomised similarity lies below its baseline; the random-"
               "logit check (another class's map) and the edge-detector control (Spearman with the CT's Sobel "
               "edges) pass below their thresholds (0.9, 0.5). Cases checked: as computed, whatever the filter.")
    return SanityView(metric, figure=figure, curves=curves.assign(method=curves.run_id.map(labels)),
                      verdicts=table, passed=passed, caption=caption)


def run_summary(ctx: ViewContext, metric: str = DEFAULT_METRIC) -> str:
    """The selected run's verdicts in one line (the report's provenance): classes passing each check."""
    verdicts = data.sanity_verdicts(ctx.ref, metric) if data.sanity_runs(ctx.ref) else None
    if verdicts is None or not (verdicts.run_id == ctx.run_id).any():
        return "not computed for this run (python -m agg2exp_core sanity)"
    mine = verdicts[verdicts.run_id == ctx.run_id]
    parts = [f"{title}: {int((part.passed == True).sum())} of {len(part)} classes pass"  # noqa: E712
             for check, title in SANITY_CHECKS.items() if len(part := mine[mine.check == check])]
    return f"{'; '.join(parts)} ({SANITY_METRICS[metric]}, {int(mine.n_cases.max())} case(s))"
