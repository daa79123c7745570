"""The cohort filter: a value object on case metadata and its parameterised SQL.

``CohortFilter`` is what the dashboard's sidebar and URL produce (``dashboard/filters.py``
parses and words it) and what every cohort query takes. A blank dataset/split/sex ('' or
spaces) counts as not recorded, like NULL (``UNKNOWN``). Pathology lists are ';'-separated
RoI names; names keep their inner spaces. Field conditions restrict a metadata field of
``case_field`` (categorical: the selected values; numeric: a closed range; either way the cases
without a value are left out, as for age); a field name and its values are SQL parameters, never text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

UNKNOWN = "unknown"          # option standing for a NULL split/sex
PATHOLOGY_ANY = "any"        # at least one pathology annotated
PATHOLOGY_NONE = "none"      # no pathology annotated
SPACE = " \t\n\r\f\v"      # what counts as blank, in Python and (as a character class) in SQL


@dataclass(frozen=True)
class FieldCondition:
    """A condition on one metadata field: ``values`` for a categorical field, ``low``/``high`` for a numeric one."""

    name: str
    values: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.values is None


@dataclass(frozen=True)
class CohortFilter:
    """A filter on case metadata. ``None`` means "no restriction"; ``()`` selects nothing."""

    datasets: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    sexes: tuple[str, ...] | None = None
    age_min: float | None = None
    age_max: float | None = None
    pathology: str = ""
    fields: tuple[FieldCondition, ...] = ()

    @property
    def is_empty_selection(self) -> bool:
        return any(v == () for v in (self.datasets, self.splits, self.sexes)) or \
            any(f.values == () for f in self.fields)

    @property
    def restrictions(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(column, selected values)`` of the categorical filters that restrict anything."""
        pairs = (("dataset", self.datasets), ("split", self.splits), ("sex", self.sexes))
        return [(column, selected) for column, selected in pairs if selected is not None]

    @property
    def age_bounds_text(self) -> tuple[str, str] | None:
        """Age bounds as short text ('' where open), or None without an age restriction."""
        if self.age_min is None and self.age_max is None:
            return None
        return ("" if self.age_min is None else f"{self.age_min:g}",
                "" if self.age_max is None else f"{self.age_max:g}")


ALL_CASES = CohortFilter()


def where_clause(cohort: CohortFilter, alias: str = "c") -> tuple[str, list]:
    """Parameterised SQL condition on the cases table (aliased ``alias``) and its parameters.

    Only fixed SQL text is produced; every value travels as a ``?`` parameter.
    """
    if not alias.isidentifier():
        raise ValueError(f"bad table alias {alias!r}")
    parts: list[str] = []
    params: list = []
    for column, selected in cohort.restrictions:
        known = [v for v in selected if v != UNKNOWN]
        terms = []
        if known:
            terms.append(f"{alias}.{column} IN ({', '.join('?' * len(known))})")
            params += known
        if UNKNOWN in selected:   # NULL or blank (dashboard.filters.is_blank)
            terms.append(f"{alias}.{column} IS NULL OR regexp_matches({alias}.{column}, '^[ \\t\\n\\r\\f\\v]*$')")
        parts.append("(" + " OR ".join(terms) + ")" if terms else "FALSE")
    if cohort.age_min is not None:
        parts.append(f"{alias}.age >= ?")
        params.append(float(cohort.age_min))
    if cohort.age_max is not None:
        parts.append(f"{alias}.age <= ?")
        params.append(float(cohort.age_max))
    # as dashboard.filters.pathology_list: ';'-separated names, blanks around each name dropped, inner blanks kept
    pathologies = (f"regexp_replace(regexp_replace(coalesce({alias}.pathologies, ''), "
                   "'[ \\t\\n\\r\\f\\v]*;[ \\t\\n\\r\\f\\v]*', ';', 'g'), "
                   "'^[ \\t\\n\\r\\f\\v;]+|[ \\t\\n\\r\\f\\v;]+$', '', 'g')")
    if cohort.pathology == PATHOLOGY_ANY:
        parts.append(f"{pathologies} <> ''")
    elif cohort.pathology == PATHOLOGY_NONE:
        parts.append(f"{pathologies} = ''")
    elif cohort.pathology:
        parts.append(f"contains(';' || {pathologies} || ';', ';' || ? || ';')")
        params.append(cohort.pathology)
    for condition in cohort.fields:
        sql, values = _field_condition(condition, alias)
        parts.append(sql)
        params += values
    return (" AND ".join(parts) if parts else "TRUE"), params


def _field_condition(condition: FieldCondition, alias: str) -> tuple[str, list]:
    """SQL on ``case_field`` for one field condition (a correlated EXISTS on the case's row of that field)."""
    field_rows = f"SELECT 1 FROM case_field cf_ WHERE cf_.case_id = {alias}.case_id AND cf_.name = ?"
    if condition.is_range:
        bounds = [("cf_.number >= ?", condition.low), ("cf_.number <= ?", condition.high)]
        bound_terms = " AND ".join(["cf_.number IS NOT NULL"] + [sql for sql, v in bounds if v is not None])
        return (f"EXISTS ({field_rows} AND {bound_terms})",
                [condition.name] + [float(v) for _, v in bounds if v is not None])
    if not condition.values:
        return "FALSE", []
    return (f"EXISTS ({field_rows} AND cf_.value IN ({', '.join('?' * len(condition.values))}))",
            [condition.name, *condition.values])


# The cases a run has results for: finished (case_status) or with matrix rows (imports).
RUN_CASES = ("SELECT case_id FROM case_status WHERE run_id = ? UNION "
             "SELECT DISTINCT case_id FROM local_importance WHERE run_id = ?")


def run_rows(run_id: str, cohort: CohortFilter) -> tuple[str, list]:
    """``FROM local_importance li JOIN cases c ... WHERE ...``: a run's matrix rows of the cohort's cases.

    Matrix rows exist only for the run's own cases, so joining the cases table is the whole
    cohort filter (no membership sub-query, which would scan the run's rows a second time).
    """
    condition, params = where_clause(cohort, "c")
    return (f"FROM local_importance li JOIN cases c USING (case_id) WHERE li.run_id = ? AND {condition}",
            [run_id] + params)


def cohort_cte(members: Sequence[str], cohort: CohortFilter) -> tuple[str, list]:
    """``WITH cohort AS (...)``: the run's cases (``members``) passing the filter, with their dataset."""
    condition, params = where_clause(cohort, "c")
    return (f"WITH cohort AS (SELECT c.case_id, c.dataset FROM cases c "
            f"WHERE c.case_id IN (SELECT unnest(?::VARCHAR[])) AND {condition}) ", [list(members)] + params)
