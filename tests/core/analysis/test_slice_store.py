"""Failure slices on a store: a scanner failure planted in the synthetic store is written as class heart's
rank-1 slice with its members, Dice in and out and cells; ``analyze --slices`` with the reasons, and its bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.analysis.slice_store import analyze_slices, find_failure_slices
from agg2exp_core.analysis.slices import SliceConfig
from agg2exp_core.errors import InputError
from agg2exp_core.store import queries
from agg2exp_core.vocabulary import AVERAGE_TARGET
from planted_slices import plant_scanner_failure
from synthetic_store import build_synthetic_store


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("slices") / "store.duckdb"
    info = build_synthetic_store(path, n_cases=60, seed=0, with_artifacts=False, eval_methods=())
    affected = plant_scanner_failure(path, "heart", drop=0.2, dataset=None)
    run_id = info["run_ids"]["vg"]
    with store.open_writer(path) as con:
        analyze_slices(con, run_id, SliceConfig(exclude_split=None))
    return {**info, "affected": affected, "run_id": run_id}


def test_planted_failure_is_written_at_rank_one_with_members_dice_and_cells(planted_store):
    heart = planted_store["roi_ids"]["heart"]
    with store.connect(planted_store["path"], read_only=True) as con:
        slices = queries.failure_slices(con, planted_store["run_id"], heart)
        top = slices.iloc[0]
        members = queries.failure_slice_members(con, planted_store["run_id"], int(top.slice_id))
        dice = queries.failure_slice_dice(con, planted_store["run_id"], int(top.slice_id))
        cells = queries.failure_slice_cells(con, planted_store["run_id"], int(top.slice_id))
    assert top["rank"] == 1 and top.description == "scanner = B" and top.q_value < 0.05 and bool(top.uses_labels)
    assert members.case_id.tolist() == planted_store["affected"] and top.n == top.members == len(members)
    assert dice.in_slice.sum() == len(members) and len(dice) == planted_store["n_cases"]
    drop = dice.dice[~dice.in_slice].mean() - dice.dice[dice.in_slice].mean()
    assert drop == pytest.approx(top.effect) and drop > 0.15
    assert len(cells) == SliceConfig().top_cells and set(cells.target) == {"heart"}
    assert (cells.p_value.diff().dropna() >= 0).all() and cells.difference.notna().all()


def test_dice_read_back_for_all_classes_is_the_dice_the_slice_was_scored_on(planted_store):
    with store.connect(planted_store["path"], read_only=True) as con:
        top = queries.failure_slices(con, planted_store["run_id"], AVERAGE_TARGET).iloc[0]
        dice = queries.failure_slice_dice(con, planted_store["run_id"], int(top.slice_id))
    assert dice.dice[~dice.in_slice].mean() - dice.dice[dice.in_slice].mean() == pytest.approx(top.effect)
    assert dice.in_slice.sum() == top.n


def test_search_reads_extra_fields_and_writes_nothing(planted_store):
    with store.connect(planted_store["path"], read_only=True) as con:
        result = find_failure_slices(con, planted_store["run_id"], SliceConfig(max_conditions=1, cluster_counts=()))
        with pytest.raises(InputError, match="vg-nonexistent"):
            find_failure_slices(con, "vg-nonexistent", SliceConfig())
    assert "scanner = B" in set(result.slices.description)
    assert not any("∧" in d for d in result.slices.description)           # one condition at most
    assert set(result.slices.source) == {"metadata"}


@pytest.mark.slow   # the outlier forests and their SHAP reasons: > 15 s on 2 cores
def test_analyze_slices_prints_them_with_reasons_and_refuses_bad_options(planted_store, tmp_path, capfd):
    from agg2exp_core import cli
    db = tmp_path / "copy.duckdb"
    shutil.copyfile(planted_store["path"], db)
    before = db.read_bytes()
    capfd.readouterr()
    with pytest.raises(SystemExit) as bad:
        cli.main(["analyze", "--db", str(db), "--slices", "--slice-max-conditions", "3"])
    assert bad.value.code == 2
    assert cli.main(["analyze", "--db", str(db), "--slices", "--slice-min-support", "1"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --slice-min-support: must be at least 2, got 1" and db.read_bytes() == before
    assert cli.main(["analyze", "--db", str(db), "--slices", "--bootstrap", "0", "--no-agreement", "--no-quality",
                     "--slice-threshold", "0.01", "--slice-max-conditions", "1"]) == 0
    out = capfd.readouterr().out
    with store.connect(db, read_only=True) as con:
        written = queries.failure_slices(con, planted_store["run_id"])
        top = written[written.class_id == planted_store["roi_ids"]["heart"]].iloc[0]
        reasons = queries.failure_slice_reasons(con, planted_store["run_id"], int(top.slice_id))
    assert len(reasons) and set(reasons.target) == {"heart"} and (reasons.n_cases == top.n).all()
    assert (reasons.contribution.diff().dropna() <= 0).all()
    assert f"failure slices: {len(written)} kept of" in out
    heart = written[written.class_id == planted_store["roi_ids"]["heart"]]
    assert heart.description.iloc[0] == "scanner = B"
    assert len(written) and (written.q_value < 0.01).all() and not written.description.str.contains("∧").any()
    assert np.array_equal(written.groupby("class_id")["rank"].min().unique(), [1])


def test_the_models_training_cases_are_left_out_of_the_search_unless_all_are(tmp_path):
    """Training cases' Dice is in-sample: a search over them would find "split = test" for every class."""
    import duckdb

    from agg2exp_core.analysis.slice_store import slice_inputs
    from agg2exp_core.analysis.slices import SliceConfig
    from synthetic_store import build_synthetic_store

    built = build_synthetic_store(tmp_path / "s.duckdb", n_cases=30, with_artifacts=False, eval_methods=())
    run_id = built["run_ids"]["vg"]
    with store.connect(built["path"], read_only=True) as con:
        splits = con.execute("SELECT split, count(*) FROM cases GROUP BY 1").fetchall()
        searched = slice_inputs(con, run_id)
        everything = slice_inputs(con, run_id, SliceConfig(exclude_split=None))
    n_train = dict(splits).get("train", 0)
    assert 0 < n_train < 30 and len(everything.case_ids) == 30
    assert len(searched.case_ids) == 30 - n_train and "train" not in set(searched.metadata.split)
    assert searched.lift.shape[0] == len(searched.dice) == len(searched.expected) == 30 - n_train
    with duckdb.connect(str(built["path"])) as con:
        con.execute("UPDATE cases SET split = 'train'")
    with store.connect(built["path"], read_only=True) as con:
        assert len(slice_inputs(con, run_id).case_ids) == 30     # all training cases: nothing else to search
