"""The site map: every page's section, title, icon and URL in one place.

``app.py`` builds ``st.navigation`` from it, and links between pages go through
``switch_to`` with the same ``StreamlitPage`` objects, so a renamed file or URL changes here only.
Page scripts live in ``app_pages/`` (not Streamlit's legacy ``pages/`` folder): a deep link on
a fresh server then always runs ``app.py`` first, login gate and frame included.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

PAGE_DIR = Path(__file__).resolve().parents[2] / "app_pages"


@dataclass(frozen=True)
class PageSpec:
    key: str        # script name in app_pages/ and URL path
    title: str
    icon: str
    section: str


SITE = (
    PageSpec("overview", "Overview", ":material/dashboard:", "Cohort"),
    PageSpec("heat_map", "Global heat map", ":material/grid_on:", "Cohort"),
    PageSpec("knowledge_graph", "Knowledge graph", ":material/hub:", "Cohort"),
    PageSpec("class_distributions", "Class distributions", ":material/candlestick_chart:", "Cohort"),
    PageSpec("context_mass", "Context mass", ":material/blur_on:", "Cohort"),
    PageSpec("drift", "Drift", ":material/trending_up:", "Cohort"),
    PageSpec("outliers", "Outliers", ":material/person_search:", "Cases"),
    PageSpec("failure_modes", "Failure modes", ":material/report:", "Cases"),
    PageSpec("case_viewer", "Case viewer", ":material/radiology:", "Cases"),
    PageSpec("methods", "Methods", ":material/science:", "Methods"),
    PageSpec("report", "Report", ":material/summarize:", "Report"),
)
SPECS = {spec.key: spec for spec in SITE}
DEFAULT = SITE[0].key


def page(key: str) -> st.Page:
    """The StreamlitPage of a page key (equal pages share their script hash across reruns)."""
    spec = SPECS[key]
    return st.Page(PAGE_DIR / f"{key}.py", title=spec.title, icon=spec.icon, url_path=key,
                   default=key == DEFAULT)


def sections() -> dict[str, list]:
    """Pages grouped by section, in the sidebar's order."""
    grouped: dict[str, list] = {}
    for spec in SITE:
        grouped.setdefault(spec.section, []).append(page(spec.key))
    return grouped


def switch_to(key: str, query_params: dict | None = None) -> None:
    """Open another page with URL query parameters (its widgets re-read them on entry)."""
    st.switch_page(page(key), query_params=query_params)
