"""Agg2Exp Studio: the Streamlit entry point, the frame every page runs in.

Run: ``streamlit run app.py -- --db data/demo.duckdb`` (else ``$AGG2EXP_DB``, else the
demo store). Every request, deep links included, runs this script first: the login gate,
then the sidebar (store, run, cohort filter kept in the URL), then the chosen page from
``app_pages/`` (layout only), grouped in sections (``dashboard.widgets.navigation``).
"""
import streamlit as st

from dashboard.auth import require_auth
from dashboard.widgets import navigation  # the site map only: reads nothing

st.set_page_config(page_title="Agg2Exp Studio", page_icon=":material/hub:", layout="wide")
# every page: login or refusal page and stop, before anything reads the store; the pages are
# registered (hidden) before such a stop so that a deep link keeps its page through the login
require_auth(keep_page=lambda: st.navigation(navigation.sections(), position="hidden"))

from dashboard import ui  # noqa: E402 - after set_page_config and authentication

chosen = st.navigation(navigation.sections())
if ui.app_frame() is None:      # no readable store: the frame explained why
    st.stop()
chosen.run()
