"""The metadata-field part of the cohort filter: options, URL form, validation and wording.

Pure functions (no Streamlit), used by ``dashboard.filters``. A field (``case_field``: any extra
manifest column, DICOM header fields) is filtered by the values picked (categorical) or a closed
range (numeric); the cases without a value are then left out, as for age. In the URL a condition is
``field.<name>=<value>`` (repeated) or ``field.<name>=<low>..<high>`` (either end may be empty).
Field names and values from a URL are checked against the run's fields; what is unknown is
dropped with a warning, never used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from agg2exp_core.io.case_fields import FIELD_NAME, MAX_NAME
from agg2exp_core.store.queries.cohort import FieldCondition
from agg2exp_core.store.queries.fields import NUMERIC
from dashboard.text import literal_list, parameter

FIELD_PREFIX = "field."
SOURCES = ("manifest", "dicom")
RANGE_SEP = ".."


@dataclass(frozen=True)
class FieldOption:
    """One metadata field of a run's cases: its values (categorical) or bounds (numeric)."""

    name: str
    kind: str
    source: str = "manifest"
    values: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None
    n_missing: int = 0

    @property
    def numeric(self) -> bool:
        return self.kind == NUMERIC

    @property
    def label(self) -> str:
        return f"{self.name} ({'range' if self.numeric else 'values'}, {self.source})"


def field_options(wide: pd.DataFrame | None, catalog: pd.DataFrame | None) -> tuple[FieldOption, ...]:
    """Options of the fields of a run's cases (``wide``: ``queries.case_fields`` of those cases).

    A name the core's writer would not have written (a store from elsewhere) is not offered: names
    become widget labels and URL keys."""
    if wide is None or catalog is None or catalog.empty:
        return ()
    options = []
    for name, kind, source in zip(catalog.name, catalog.kind, catalog.source):
        if name not in wide.columns or len(str(name)) > MAX_NAME or not FIELD_NAME.fullmatch(str(name)):
            continue
        column = wide[name]
        present = column.dropna()
        if present.empty:
            continue
        source = source if source in SOURCES else "other"
        if kind == NUMERIC:
            numbers = present.astype(float)
            numbers = numbers[numbers.abs() < float("inf")]   # a store from elsewhere may hold inf
            if numbers.empty:
                continue
            options.append(FieldOption(name, kind, str(source), bounds=(float(numbers.min()), float(numbers.max())),
                                       n_missing=int(column.isna().sum())))
        else:
            options.append(FieldOption(name, kind, str(source), values=tuple(sorted(map(str, present.unique()))),
                                       n_missing=int(column.isna().sum())))
    return tuple(options)


def url_field_keys(keys: Sequence[str]) -> list[str]:
    """The URL keys that hold field conditions."""
    return [k for k in keys if k.startswith(FIELD_PREFIX) and len(k) > len(FIELD_PREFIX)]


def parse_fields(params: Mapping[str, Sequence[str]], options: Sequence[FieldOption],
                 warnings: list[str]) -> tuple[FieldCondition, ...]:
    """Field conditions from URL values; what is not a field (or value) of the run is reported and dropped."""
    by_name = {o.name: o for o in options}
    conditions = []
    for key in url_field_keys(list(params)):
        name, raw = key[len(FIELD_PREFIX):], [v for v in params.get(key, []) if v is not None]
        option = by_name.get(name)
        if option is None:
            warnings.append(f"Ignored URL parameter {parameter(key, *raw[:3])}: no such metadata field in this run "
                            f"(known: {literal_list(by_name)}).")
            continue
        condition = _parse_range(key, option, raw, warnings) if option.numeric else \
            _parse_values(key, option, raw, warnings)
        if condition is not None:
            conditions.append(condition)
    return tuple(conditions)


def _parse_values(key: str, option: FieldOption, raw: list[str], warnings: list[str]) -> FieldCondition | None:
    if raw == [""]:
        return FieldCondition(option.name, values=())
    good = tuple(v for v in dict.fromkeys(raw) if v in option.values)
    bad = [v for v in raw if v not in option.values]
    if bad:
        warnings.append(f"Ignored URL parameter {parameter(key, *bad[:5])}: no such value of {option.name} in this "
                        f"run (known: {literal_list(option.values)}).")
    return FieldCondition(option.name, values=good) if good else None


def _parse_range(key: str, option: FieldOption, raw: list[str], warnings: list[str]) -> FieldCondition | None:
    text = raw[0] if raw else ""
    low_text, sep, high_text = text.partition(RANGE_SEP)
    low, high = _number(low_text), _number(high_text)
    if not sep or low is False or high is False or (low is not None and high is not None and low > high):
        warnings.append(f"Ignored URL parameter {parameter(key, text)}: not a range 'low..high' of {option.name}.")
        return None
    return FieldCondition(option.name, low=low, high=high)


def _number(text: str) -> float | None | bool:
    """The number a bound spells, None when empty, False when it is not a finite number."""
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return False
    return value if math.isfinite(value) else False


def normalise_fields(conditions: Sequence[FieldCondition],
                     options: Sequence[FieldOption]) -> tuple[FieldCondition, ...]:
    """Drop conditions that keep every case (all values / the whole range, and no case without a value)."""
    by_name = {o.name: o for o in options}
    kept = []
    for condition in conditions:
        option = by_name.get(condition.name)
        if option is None:
            continue
        everything = option.n_missing == 0 and (
            (condition.values is not None and set(condition.values) >= set(option.values)) if not condition.is_range
            else _covers(condition, option.bounds))
        if not everything:
            kept.append(condition)
    return tuple(kept)


def _covers(condition: FieldCondition, bounds: tuple[float, float] | None) -> bool:
    return bounds is not None and (condition.low is None or condition.low <= bounds[0]) and \
        (condition.high is None or condition.high >= bounds[1])


def fields_to_params(conditions: Sequence[FieldCondition]) -> dict[str, list[str]]:
    params = {}
    for c in conditions:
        if c.is_range:
            params[FIELD_PREFIX + c.name] = [f"{_bound(c.low)}{RANGE_SEP}{_bound(c.high)}"]
        else:
            params[FIELD_PREFIX + c.name] = list(c.values) if c.values else [""]
    return params


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def describe_fields(conditions: Sequence[FieldCondition], quote=str) -> list[str]:
    """Caption parts, e.g. ``scanner: B, C`` and ``slice_thickness_mm 2–5``."""
    parts = []
    for c in conditions:
        if not c.is_range:
            parts.append(f"{quote(c.name)}: {', '.join(map(quote, c.values)) if c.values else '(none)'}")
        elif c.low is not None and c.high is not None:
            parts.append(f"{quote(c.name)} {c.low:g}–{c.high:g}")
        elif c.low is not None or c.high is not None:
            parts.append(f"{quote(c.name)} ≥ {c.low:g}" if c.low is not None else f"{quote(c.name)} ≤ {c.high:g}")
        else:
            parts.append(f"{quote(c.name)} recorded")
    return parts


def fields_slug(conditions: Sequence[FieldCondition]) -> list[str]:
    return [f"{c.name}-{'+'.join(c.values) or 'none'}" if not c.is_range
            else f"{c.name}{_bound(c.low)}-{_bound(c.high)}" for c in conditions]


def apply_fields(cases: pd.DataFrame, conditions: Sequence[FieldCondition]) -> pd.Series:
    """Where ``cases`` (with a column per field, as ``queries.case_fields``) pass the conditions."""
    keep = pd.Series(True, index=cases.index)
    for c in conditions:
        column = cases[c.name] if c.name in cases.columns else pd.Series(None, index=cases.index, dtype=object)
        if c.is_range:
            numbers = pd.to_numeric(column, errors="coerce")
            hit = numbers.notna()
            if c.low is not None:
                hit &= numbers >= c.low
            if c.high is not None:
                hit &= numbers <= c.high
        else:
            hit = column.isin(list(c.values)) & column.notna()
        keep &= hit.fillna(False).astype(bool)
    return keep
