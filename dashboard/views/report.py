"""The Report page's choices: which cases can be shown slice by slice, which are suggested, and what the
report will hold (the report itself is built by ``dashboard.report`` from the other views)."""
from __future__ import annotations

from dashboard import data
from dashboard.analytics import Roi
from dashboard.context import ViewContext
from dashboard.views import outliers
from dashboard.views.case_viewer import cases_with_slices

FIXED_PAGES = 7          # provenance, heat map, its values, distributions, their summary, two outlier pages


def suggested_cases(ctx: ViewContext, target: Roi, url_case: str | None, limit: int = 3) -> list[str]:
    """The case viewer's case, then the class's top outliers (cases with slices only)."""
    with_slices = cases_with_slices(ctx)
    allowed = set(with_slices)
    suggested = [c for c in [url_case] if c in allowed]
    if target.roi_id in outliers.targets(ctx):
        ranking = data.anomaly_ranking(ctx.ref, ctx.run_id, ctx.cohort, target.roi_id)
        suggested += [c for c in ranking.case_id if c in allowed and c not in suggested]
    return (suggested or with_slices)[:limit]


def contents_line(target: Roi, case_ids: list[str]) -> str:
    """What the report holds, page by page (Markdown)."""
    return ("The report holds, one page each: provenance · global heat map · its values · distributions of "
            f"**{target.name}** · their summary · anomaly vs Dice · outlier ranking"
            + "".join(f" · case **{c}**" for c in case_ids) + f" ({FIXED_PAGES + len(case_ids)} pages, A4 landscape).")
