"""Shared fixtures: a synthetic store (tests/support/synthetic_store.py) and the imported TSV2 store."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TSV2_CSV = ROOT / "data" / "agg2exp-tsv2" / "tsv2_test_aggregated_sg_explanations_with_dice.csv"  # committed copy
for path in (ROOT, ROOT / "tests" / "support"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> dict:
    """60 cases, runs vg and smoothgrad, every table filled, slice artefacts."""
    from synthetic_store import build_synthetic_store

    return build_synthetic_store(tmp_path_factory.mktemp("synthetic") / "store.duckdb", n_cases=60, seed=0,
                                 run_methods=("vg", "smoothgrad"))


@pytest.fixture(scope="session")
def tsv2_store(tmp_path_factory) -> dict:
    """The paper's 32 published TSV2 cases imported as a store (no sex/age, abs masses, Dice)."""
    csv = TSV2_CSV
    from agg2exp_core.pipeline.importer import import_agg2exp_csv

    path = tmp_path_factory.mktemp("tsv2") / "tsv2.duckdb"
    run_id = import_agg2exp_csv(csv, path)
    return {"path": path, "run_id": run_id}


@pytest.fixture(scope="session", autouse=True)
def _release_cached_connections():
    """Close the dashboard's cached DuckDB connections before the interpreter exits."""
    yield
    import gc

    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    gc.collect()
