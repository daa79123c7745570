"""The cohort filter: its options, validation of URL values, URL form and wording.

Pure functions (no Streamlit): the sidebar in ``dashboard.ui`` turns widgets into a
``CohortFilter`` (a value object of the core, ``agg2exp_core.store.queries.cohort``, which
also turns it into SQL). Values that come
from a URL are checked against the options of the shown run before use; anything
unknown is dropped with a warning (the warnings are shown on the page, values in them as
literal text). A blank dataset/split/sex ('' or spaces) counts as not recorded, like NULL,
so that '' never has to stand for a value in the URL, where ``split=`` means "select nothing".
Pathology lists are ';'-separated RoI names; names keep their inner spaces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import pandas as pd

from agg2exp_core.store.queries.cohort import (PATHOLOGY_ANY, PATHOLOGY_NONE, SPACE, UNKNOWN,  # noqa: F401
                                              CohortFilter, FieldCondition)
from dashboard import field_filters
from dashboard.field_filters import FieldOption, url_field_keys  # noqa: F401
from dashboard.text import literal_list, parameter

FILTER_KEYS = ("dataset", "split", "sex", "age_min", "age_max", "pathology")


@dataclass(frozen=True)
class FilterOptions:
    """What the cases of a run allow to filter on."""

    datasets: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    sexes: tuple[str, ...] = ()            # includes UNKNOWN when some cases lack sex (NULL or blank)
    age_range: tuple[int, int] | None = None
    pathologies: tuple[str, ...] = ()
    n_unknown_sex: int = 0
    n_unknown_age: int = 0
    n_cases: int = 0
    fields: tuple[FieldOption, ...] = ()   # metadata fields (dashboard.field_filters)

    def field(self, name: str) -> FieldOption | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def sex_recorded(self) -> bool:
        return any(s != UNKNOWN for s in self.sexes)

    @property
    def age_recorded(self) -> bool:
        return self.age_range is not None

    @property
    def pathology_choices(self) -> tuple[str, ...]:
        """Values of the pathology filter: '' (all cases), any, none, then each RoI name."""
        return ("", PATHOLOGY_ANY, PATHOLOGY_NONE) + self.pathologies


def pathology_list(value: str | None) -> list[str]:
    """The RoI names of one ';'-separated pathology list, stripped of surrounding blanks."""
    if not isinstance(value, str):
        return []
    return [name for name in (part.strip(SPACE) for part in value.split(";")) if name]


def pathology_names(values: Sequence[str | None]) -> list[str]:
    """Sorted distinct RoI names of ';'-separated pathology lists (each distinct list parsed once:
    a registry's 20,000 cases hold a few dozen)."""
    return sorted({name for v in pd.Series(values, dtype=object).unique() for name in pathology_list(v)})


def is_blank(series: pd.Series) -> pd.Series:
    """Where a metadata column is not recorded: NULL, '' or only blanks (vectorised: every rerun
    of every page asks it of all the run's cases)."""
    text = series.astype("string")   # NULL stays NA; non-strings become their (non-blank) text
    return (text.isna() | text.str.strip(SPACE).eq("")).fillna(True).astype(bool)


def options_from_cases(cases: pd.DataFrame) -> FilterOptions:
    """Options of a run's cases (columns dataset, split, sex, age, pathologies)."""
    if cases.empty:
        return FilterOptions()

    def values(column: str) -> tuple[str, ...]:
        series, blank = cases[column], is_blank(cases[column])
        known = sorted({str(v) for v in series[~blank].unique()})
        return tuple(known) + ((UNKNOWN,) if blank.any() and known else ())

    ages = pd.to_numeric(cases["age"], errors="coerce")
    age_range = None
    if ages.notna().any():
        lo, hi = int(math.floor(ages.min())), int(math.ceil(ages.max()))
        age_range = (lo, max(hi, lo + 1))
    return FilterOptions(datasets=values("dataset"), splits=values("split"), sexes=values("sex"),
                         age_range=age_range, pathologies=tuple(pathology_names(cases["pathologies"])),
                         n_unknown_sex=int(is_blank(cases["sex"]).sum()), n_unknown_age=int(ages.isna().sum()),
                         n_cases=len(cases))


def with_fields(options: FilterOptions, wide: pd.DataFrame | None, catalog: pd.DataFrame | None) -> FilterOptions:
    """The options with the run's metadata fields (``wide``: ``queries.case_fields`` of the run's cases)."""
    return replace(options, fields=field_filters.field_options(wide, catalog))


def normalise(cohort: CohortFilter, options: FilterOptions) -> CohortFilter:
    """Drop restrictions that select everything (so the URL and captions stay short)."""
    def full(selected, available):
        return None if selected is not None and set(selected) >= set(available) and available else selected

    age_min, age_max = cohort.age_min, cohort.age_max
    if options.age_range is not None:
        lo, hi = options.age_range
        if age_min is not None and age_min <= lo:
            age_min = None
        if age_max is not None and age_max >= hi:
            age_max = None
    return replace(cohort, datasets=full(cohort.datasets, options.datasets),
                   splits=full(cohort.splits, options.splits), sexes=full(cohort.sexes, options.sexes),
                   age_min=age_min, age_max=age_max,
                   fields=field_filters.normalise_fields(cohort.fields, options.fields))


def parse_filter_params(params: Mapping[str, Sequence[str]], options: FilterOptions) -> tuple[CohortFilter, list[str]]:
    """A validated filter from URL values (``key -> list of values``) and warnings for what was ignored."""
    warnings: list[str] = []

    def choice(key: str, available: tuple[str, ...], what: str) -> tuple[str, ...] | None:
        raw = [v for v in params.get(key, []) if v is not None]
        if not raw:
            return None
        if raw == [""]:
            return ()
        good = tuple(v for v in dict.fromkeys(raw) if v in available)
        bad = [v for v in raw if v not in available]
        if bad:
            warnings.append(f"Ignored URL parameter {parameter(key, *bad[:5])}: "
                            f"no such {what} in this run (known: {literal_list(available)}).")
        return good if good else None

    datasets = choice("dataset", options.datasets, "dataset")
    splits = choice("split", options.splits, "split")
    sexes = choice("sex", options.sexes, "sex value")
    age_min, age_max = _age_bound(params, "age_min", warnings), _age_bound(params, "age_max", warnings)
    if (age_min is not None or age_max is not None) and not options.age_recorded:
        warnings.append("Ignored the age filter of the URL: this cohort has no age recorded.")
        age_min = age_max = None
    if age_min is not None and age_max is not None and age_min > age_max:
        warnings.append(f"Ignored the age filter of the URL: age_min {age_min:g} is above age_max {age_max:g}.")
        age_min = age_max = None
    pathology = (params.get("pathology") or [""])[0] or ""
    if pathology not in options.pathology_choices:
        warnings.append(f"Ignored URL parameter {parameter('pathology', pathology)}: not annotated in this run "
                        f"(known: {literal_list(options.pathologies)}).")
        pathology = ""
    cohort = CohortFilter(datasets=datasets, splits=splits, sexes=sexes, age_min=age_min, age_max=age_max,
                          pathology=pathology, fields=field_filters.parse_fields(params, options.fields, warnings))
    return normalise(cohort, options), warnings


def _age_bound(params: Mapping[str, Sequence[str]], key: str, warnings: list[str]) -> float | None:
    raw = (params.get(key) or [None])[0]
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 150:
        warnings.append(f"Ignored URL parameter {parameter(key, raw)}: not an age between 0 and 150.")
        return None
    return value


def filter_to_params(cohort: CohortFilter) -> dict[str, list[str]]:
    """URL form of a (normalised) filter: only the restrictions, as ``key -> values``."""
    params: dict[str, list[str]] = {}
    for key, selected in cohort.restrictions:
        params[key] = list(selected) if selected else [""]
    if cohort.age_min is not None:
        params["age_min"] = [f"{cohort.age_min:g}"]
    if cohort.age_max is not None:
        params["age_max"] = [f"{cohort.age_max:g}"]
    if cohort.pathology:
        params["pathology"] = [cohort.pathology]
    return {**params, **field_filters.fields_to_params(cohort.fields)}


def apply_filter(cases: pd.DataFrame, cohort: CohortFilter) -> pd.DataFrame:
    """The same filter on a cases frame in memory (used where the cases are already loaded)."""
    keep = pd.Series(True, index=cases.index)
    for column, selected in cohort.restrictions:
        hit = cases[column].isin([v for v in selected if v != UNKNOWN])
        if UNKNOWN in selected:
            hit |= is_blank(cases[column])
        keep &= hit
    ages = pd.to_numeric(cases["age"], errors="coerce")
    if cohort.age_min is not None:
        keep &= ages >= cohort.age_min
    if cohort.age_max is not None:
        keep &= ages <= cohort.age_max
    lists = cases["pathologies"].map(pathology_list)
    if cohort.pathology == PATHOLOGY_ANY:
        keep &= lists.map(bool)
    elif cohort.pathology == PATHOLOGY_NONE:
        keep &= ~lists.map(bool)
    elif cohort.pathology:
        keep &= lists.map(lambda names: cohort.pathology in names)
    keep &= field_filters.apply_fields(cases, cohort.fields)   # cases with a column per field
    return cases[keep.fillna(False).astype(bool)]


def describe_filter(cohort: CohortFilter, quote: Callable[[str], str] = str) -> str:
    """One line for captions: 'all cases' or e.g. 'dataset: external · sex: F · age 40–60'.

    ``quote`` wraps each value (``text.literal`` where the line is Markdown).
    """
    parts = []
    for name, selected in cohort.restrictions:
        parts.append(f"{name}: {', '.join(map(quote, selected)) if selected else '(none)'}")
    if cohort.age_bounds_text:
        lo, hi = cohort.age_bounds_text
        parts.append(f"age {lo}–{hi}" if lo and hi else (f"age ≥ {lo}" if lo else f"age ≤ {hi}"))
    if cohort.pathology:
        label = {PATHOLOGY_ANY: "any pathology", PATHOLOGY_NONE: "no pathology"}.get(
            cohort.pathology, f"with {quote(cohort.pathology)}")
        parts.append(label)
    parts += field_filters.describe_fields(cohort.fields, quote)
    return " · ".join(parts) if parts else "all cases"


def filter_slug(cohort: CohortFilter) -> str:
    """Short file-name-safe form of a filter, e.g. 'dataset-external_sex-F_age40-60'."""
    parts = []
    for name, selected in cohort.restrictions:
        parts.append(f"{name}-{'+'.join(selected) or 'none'}")
    if cohort.age_bounds_text:
        lo, hi = cohort.age_bounds_text
        parts.append(f"age{lo}-{hi}")
    if cohort.pathology:
        parts.append(f"path-{cohort.pathology}")
    parts += field_filters.fields_slug(cohort.fields)
    return "_".join(parts) if parts else "all"
