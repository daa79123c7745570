"""The sidebar's metadata-field filter: a searchable picker of fields, then values or a range per field.

The widgets' values live in the sidebar filter's shadow (``dashboard.ui``), so the URL seeds them on
the session's first run and a run change keeps what still exists. ``mirror`` is ``ui._mirror``.
"""
from __future__ import annotations

from typing import Callable

from dashboard import filters
from dashboard.filters import FieldCondition, FilterOptions
from dashboard.text import literal

W_FIELDS = "w_fields"


def value_key(name: str) -> str:
    return f"w_field_{name}"


def seed(shadow: dict, conditions: tuple[FieldCondition, ...], options: FilterOptions) -> None:
    """Widget values from a filter (the URL's on the first run; none after a reset)."""
    shadow[W_FIELDS] = [c.name for c in conditions if options.field(c.name) is not None]
    for c in conditions:
        option = options.field(c.name)
        if option is None:
            continue
        if option.numeric:
            lo, hi = option.bounds
            shadow[value_key(c.name)] = (_clip(c.low, lo, hi, lo), _clip(c.high, lo, hi, hi))
        else:
            shadow[value_key(c.name)] = list(c.values or ())


def revalidate(shadow: dict, options: FilterOptions) -> None:
    """After a run change: keep the fields (and values, ranges clipped) the new run has."""
    shadow[W_FIELDS] = [n for n in shadow.get(W_FIELDS, []) if options.field(n) is not None]
    for name in shadow[W_FIELDS]:
        option, key = options.field(name), value_key(name)
        if option.numeric:
            lo, hi = option.bounds
            a, b = shadow.get(key, (lo, hi))
            shadow[key] = (_clip(a, lo, hi, lo), _clip(b, lo, hi, hi))
        else:
            kept = [v for v in shadow.get(key, []) if v in option.values]
            shadow[key] = kept or list(option.values)


def draw(sidebar, options: FilterOptions, shadow: dict, mirror: Callable[[str], dict]) -> tuple[FieldCondition, ...]:
    """The picker and one values/range widget per picked field; returns their conditions."""
    if not options.fields:
        return ()
    labels = {o.name: o.label for o in options.fields}
    shadow[W_FIELDS] = [n for n in shadow.get(W_FIELDS, []) if n in labels]
    picked = sidebar.multiselect("Metadata fields", list(labels), **mirror(W_FIELDS), format_func=labels.get,
                                 placeholder="search the cases' fields", help="Fields of the manifest and of DICOM "
                                 "headers (scanner, site, kernel, slice thickness, ...). Type to search.")
    return tuple(_condition(sidebar, options.field(name), shadow, mirror) for name in picked)


def _condition(sidebar, option: filters.FieldOption, shadow: dict, mirror) -> FieldCondition:
    key = value_key(option.name)
    if option.numeric:
        lo, hi = option.bounds
        if lo == hi:
            sidebar.caption(f"{literal(option.name)}: every case has {lo:g}.")
            condition = FieldCondition(option.name)
        else:
            shadow.setdefault(key, (lo, hi))
            a, b = sidebar.slider(option.name, float(lo), float(hi), **mirror(key))
            condition = FieldCondition(option.name, low=None if a <= lo else float(a),
                                       high=None if b >= hi else float(b))
    else:
        shadow.setdefault(key, list(option.values))
        shadow[key] = [v for v in shadow[key] if v in option.values]
        chosen = sidebar.multiselect(option.name, list(option.values), **mirror(key), placeholder="none selected")
        condition = FieldCondition(option.name, values=tuple(chosen))
    if option.n_missing:
        sidebar.caption(f"{option.n_missing} case(s) without {literal(option.name)} are left out.")
    return condition


def _clip(value: float | None, lo: float, hi: float, default: float) -> float:
    return float(default if value is None else min(hi, max(lo, value)))
