"""What every view is computed for: the store, the run, its RoIs, the cohort filter and the cohort's
cases (no Streamlit: the sidebar builds one per page run, the report and the tests build their own)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from dashboard import analytics, filters
from dashboard.analytics import Roi

if TYPE_CHECKING:       # the store reader caches with Streamlit; the context only holds its reference
    from dashboard.data import StoreRef


@dataclass
class ViewContext:
    """Store, run, filter, and the cohort's cases: the input of every view."""

    ref: "StoreRef"
    store_label: str
    run: pd.Series
    runs: pd.DataFrame
    rois: dict[int, Roi]
    options: filters.FilterOptions
    cohort: filters.CohortFilter
    cases: pd.DataFrame
    n_run_cases: int
    warnings: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def method(self) -> str:
        return str(self.run["method"])

    @property
    def params(self) -> dict:
        return self.run["params"] or {}

    @property
    def cohort_text(self) -> str:
        return filters.describe_filter(self.cohort)

    @property
    def has_signed_masses(self) -> bool:
        return bool(self.run["has_signed"])

    @property
    def has_lift(self) -> bool:
        """Whether the run stores the volume-adjusted mass (lift)."""
        return bool(self.run.get("has_lift", False))

    def provenance(self, n: int | None = None, extra: str = "") -> str:
        """The subtitle of a figure: run, method, cohort filter, n (the cohort's cases unless given)."""
        return analytics.provenance_text(self.run_id, self.method, self.cohort_text,
                                         len(self.cases) if n is None else n, extra)

    def name_parts(self, *what: str) -> list[str]:
        """File-name parts: what the figure shows, then run and filter."""
        return [*what, self.run_id, filters.filter_slug(self.cohort)]

    def class_rois(self) -> list[Roi]:
        """The run's classes (channel order of its label names), else all class RoIs."""
        by_name = {r.name: r for r in self.rois.values()}
        names = [n for n in self.run["label_names"] if n in by_name] if len(self.run["label_names"]) else []
        return [by_name[n] for n in names] or [r for r in self.rois.values() if r.is_class]

    def channel_of(self, roi: Roi) -> int | None:
        """Model channel of a class RoI (index in the run's label names)."""
        names = list(self.run["label_names"])
        return names.index(roi.name) if roi.name in names else None

    def roi_by_name(self, name: str) -> Roi:
        by_name = {r.name: r for r in self.rois.values()}
        if name not in by_name:
            raise ValueError(f"class {name!r} is not a RoI of this store")
        return by_name[name]

    def roi_name(self, roi_id: int) -> str:
        return analytics.roi_name(self.rois, roi_id)
