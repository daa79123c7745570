"""The Quality page's store reads: Streamlit's caches around ``agg2exp_core.store.queries.quality``
(expected Dice: ablation, risk-coverage, flags, contributions). Beside ``dashboard/data.py`` (same
connection and cache rules, its ``_read``) because that module is at the 400-line limit."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from agg2exp_core.store import queries
from dashboard.data import StoreRef, _read


@st.cache_data(max_entries=16, show_spinner=False)
def quality_ablation(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """``feature_set, scope, metric, value, n`` of a run's expected-Dice ablation."""
    return _read(ref, queries.quality_ablation, run_id)


@st.cache_data(max_entries=16, show_spinner=False)
def risk_coverage(ref: StoreRef, run_id: str, scope: str) -> pd.DataFrame:
    """``ranking, position, coverage, risk`` of a run's risk-coverage curves in one scope."""
    return _read(ref, queries.risk_coverage, run_id, scope)


@st.cache_data(max_entries=16, show_spinner=False)
def flagged_cells(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Every (case, class) flagged a likely failure, with the true Dice where known."""
    return _read(ref, queries.flagged_cells, run_id)


@st.cache_data(max_entries=16, show_spinner=False)
def estimate_truth(ref: StoreRef, run_id: str) -> pd.DataFrame:
    """Expected beside true Dice of every labelled (case, class) of a run."""
    return _read(ref, queries.estimate_truth, run_id)


@st.cache_data(max_entries=64, show_spinner=False)
def quality_contributions(ref: StoreRef, run_id: str, case_id: str, class_id: int) -> pd.DataFrame:
    """``feature, feature_group, value, contribution`` of one flagged cell."""
    return _read(ref, queries.quality_contributions, run_id, case_id, class_id)
