"""Building a ``ViewContext`` outside the sidebar (the report, tests) and what several views share."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from agg2exp_core.vocabulary import AVERAGE_TARGET
from dashboard import analytics, data, filters
from dashboard.context import ViewContext


@dataclass
class Figure:
    """A figure with the file-name parts of its downloads."""

    figure: go.Figure
    name_parts: list[str]


def open_context(ref: data.StoreRef, run_id: str, cohort: filters.CohortFilter = filters.CohortFilter(),
                 store_label: str = "") -> ViewContext:
    """The context of one run and cohort filter, read from the store (raises ValueError for an unknown run)."""
    runs = data.runs(ref)
    if run_id not in set(runs.run_id):
        raise ValueError(f"run {run_id!r} is not in the store {ref.path}")
    run_cases = data.run_cases(ref, run_id)
    return ViewContext(ref=ref, store_label=store_label or ref.name, run=runs.set_index("run_id", drop=False).loc[run_id],
                       runs=runs, rois=analytics.roi_table(data.rois(ref)),
                       options=filter_options(ref, run_id, run_cases), cohort=cohort,
                       cases=data.cohort_cases(ref, run_id, cohort), n_run_cases=len(run_cases))


def filter_options(ref: data.StoreRef, run_id: str, run_cases) -> filters.FilterOptions:
    """What the run's cases allow to filter on, their metadata fields included."""
    return filters.with_fields(filters.options_from_cases(run_cases), data.run_fields(ref, run_id),
                               data.field_catalog(ref))


def with_case_fields(ctx: ViewContext, table):
    """A table listing cases (``case_id`` column) with the cases' metadata fields appended (for its CSV);
    a field named like a column of the table gets the suffix '_field'."""
    fields = data.run_fields(ctx.ref, ctx.run_id)
    if len(fields.columns) <= 1 or "case_id" not in table.columns:
        return table
    return table.merge(fields, on="case_id", how="left", suffixes=("", "_field"))


def target_name(ctx: ViewContext, target_id: int) -> str:
    """A class's name; the average over classes (``AVERAGE_TARGET``) by the name the pages give it."""
    return analytics.roi_name(ctx.rois, target_id)


def dice_label(ctx: ViewContext, target_id: int) -> str:
    """What the Dice axis of a class's outlier figures shows."""
    return "mean Dice over classes" if target_id == AVERAGE_TARGET else f"Dice of {target_name(ctx, target_id)}"


def with_names(ctx: ViewContext, frame: pd.DataFrame, **columns: str) -> pd.DataFrame:
    """``frame`` with RoI-name columns (e.g. ``target="target_id"``) from its id columns."""
    return frame.assign(**{name: frame[ids].map(lambda i: analytics.roi_name(ctx.rois, i))
                           for name, ids in columns.items()})
