"""Agg2Exp Studio: the Streamlit entry point (navigation, authentication hook, cohort sidebar).

Run: ``streamlit run app.py -- --db data/demo.duckdb`` (else ``$AGG2EXP_DB``, else the
demo store). The app only reads the DuckDB store; each page under ``pages/`` lays out
one view of it, filtered by the sidebar's cohort filter (kept in the URL).
"""
import streamlit as st

from dashboard.auth import require_auth

st.set_page_config(page_title="Agg2Exp Studio", page_icon=":material/hub:", layout="wide")
require_auth()  # every page: login or refusal page and stop, before anything reads the store

from dashboard import ui  # noqa: E402 - after set_page_config and authentication

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/heat_map.py", title="Global heat map", icon=":material/grid_on:"),
    st.Page("pages/knowledge_graph.py", title="Knowledge graph", icon=":material/hub:"),
    st.Page("pages/class_distributions.py", title="Class distributions", icon=":material/candlestick_chart:"),
    st.Page("pages/context_mass.py", title="Context mass", icon=":material/blur_on:"),
    st.Page("pages/outliers.py", title="Outliers", icon=":material/person_search:"),
    st.Page("pages/drift.py", title="Drift", icon=":material/trending_up:"),
    st.Page("pages/case_viewer.py", title="Case viewer", icon=":material/radiology:"),
    st.Page("pages/methods.py", title="Methods", icon=":material/science:"),
    st.Page("pages/report.py", title="Report", icon=":material/summarize:"),
]

navigation = st.navigation(PAGES)
if ui.app_frame() is None:      # no readable store: the frame explained why
    st.stop()
ui.mark_app_ran()
navigation.run()
