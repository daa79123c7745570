"""The retest stage recomputes a SmoothGrad run's cases exactly as precompute does, with other seeds."""
from __future__ import annotations

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis import retest as icc
from agg2exp_core.cli import main
from agg2exp_core.errors import InputError
from agg2exp_core.pipeline.precompute import precompute
from agg2exp_core.pipeline.retest_stage import RetestConfig, retest
from agg2exp_core.store import queries
from cohorts import tiny_phantom_cohort


@pytest.fixture(scope="module")
def smoothgrad_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("retest")
    manifest, checkpoint = tiny_phantom_cohort(root)
    db = root / "store.duckdb"
    summary = precompute(manifest, checkpoint, db, "smoothgrad", {"n_samples": 2, "sigma": 0.3, "seed": 0},
                         classes=[0, 1, 8], progress=False)
    return db, summary.run_id, manifest, checkpoint


def test_the_runs_own_seed_reproduces_its_stored_matrices(smoothgrad_run):
    db, run_id, manifest, checkpoint = smoothgrad_run
    table = retest(db, run_id, RetestConfig(seeds=(0,), max_cases=8, forest_seeds=0), manifest, checkpoint,
                   analysed=False)
    assert set(table.factor) == {icc.SMOOTHGRAD_SEED} and set(table.kind) == {"abs", "lift"}
    defined = table.icc.dropna()
    assert len(defined) > 10 and np.allclose(defined, 1.0, atol=1e-6)
    assert table.n_cases.max() == 4 and (table.n_repeats == 2).all()  # every case of the run
    with store.connect(db, read_only=True) as con:
        assert len(queries.retest_icc(con, run_id)) == len(table)


def test_another_seed_moves_some_cells_and_replaces_the_stored_rows(smoothgrad_run):
    db, run_id, manifest, checkpoint = smoothgrad_run
    table = retest(db, run_id, RetestConfig(seeds=(1, 2), max_cases=3, forest_seeds=0), manifest, checkpoint,
                   analysed=False)
    defined = table.icc.dropna()
    assert (table.n_repeats == 3).all() and table.n_cases.max() == 3
    assert (defined < 0.999).any() and (defined <= 1 + 1e-9).all()
    with store.connect(db, read_only=True) as con:
        stored = queries.retest_icc(con, run_id)
    assert len(stored) == len(table) and (stored.n_repeats == 3).all()


def test_bad_settings_are_refused_in_one_line(smoothgrad_run, capsys):
    db, run_id, manifest, _ = smoothgrad_run
    with pytest.raises(InputError, match="at least 2 cases"):
        RetestConfig(max_cases=1)
    with pytest.raises(InputError, match="no such run"):
        retest(db, "nope", RetestConfig(forest_seeds=0))
    assert main(["retest", "--db", str(db), "--run", run_id, "--manifest", str(manifest)]) == 2
    assert "--manifest" in capsys.readouterr().err


def test_a_method_whose_map_ignores_the_seed_is_not_recomputed(smoothgrad_run):
    """VG takes a seed parameter (a uniform signature) but gives one map: a seed retest would only cost time."""
    db, _, manifest, checkpoint = smoothgrad_run
    vg = precompute(manifest, checkpoint, db, "vg", classes=[0, 1], progress=False).run_id
    table = retest(db, vg, RetestConfig(seeds=(1,), forest_seeds=0), manifest, checkpoint, analysed=False)
    assert table.empty
