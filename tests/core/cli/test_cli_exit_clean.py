"""Commands end clean: no DuckDB object outlives the interpreter (nanobind prints "leaked
instances / types / functions" at exit when one does).

``analyze`` ended with dozens of such lines, and so did the demo build: ``shap``, imported on
first use inside ``outlier_reasons(con, ...)``, keeps the import errors of its optional extras
with their tracebacks, whose frames reached back to the caller holding the connection.
"""
from __future__ import annotations

import pytest

from agg2exp_core.pipeline.precompute import precompute
from cohorts import make_checkpoint, make_cohort, run_cli


@pytest.fixture(scope="module")
def computed_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("exit_clean")
    manifest, model = make_cohort(root / "cohort", n=4), make_checkpoint(root / "model.pt")
    precompute(manifest, model, root / "store.duckdb", "vg", {}, progress=False)
    return root / "store.duckdb"


@pytest.mark.slow   # ~10 s or more on 2 cores (make test-fast leaves it out)
def test_analyze_with_outlier_reasons_leaves_no_duckdb_object_at_exit(computed_store):
    done = run_cli("analyze", "--db", computed_store, "--bootstrap", "0", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "outlier reasons:" in done.stdout, "the step that imports shap must have run"
    assert "nanobind" not in done.stderr, done.stderr[-2000:]
