"""``agg2exp predict`` gives a new user results or one line that says why not: a manifest
without a split column scores every labelled case (the default ``--split test`` once matched
none and the command printed nothing with exit status 0)."""
from __future__ import annotations

import pandas as pd
import pytest

from agg2exp_core.cli import main
from cohorts import make_checkpoint, make_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    manifest = make_cohort(root / "cohort", n=3)  # c0 train, c1 and c2 test
    frame = pd.read_csv(manifest)
    frame.drop(columns=["split"]).to_csv(root / "cohort" / "no_split.csv", index=False)
    frame.drop(columns=["label"]).to_csv(root / "cohort" / "no_label.csv", index=False)
    return {"split": manifest, "no_split": root / "cohort" / "no_split.csv",
            "no_label": root / "cohort" / "no_label.csv", "model": make_checkpoint(root / "model.pt")}


def predict(cohort, manifest: str, *extra: str) -> list[str]:
    return ["predict", "--manifest", str(cohort[manifest]), "--model", str(cohort["model"]), "--device", "cpu",
            *extra]


def scored_cases(out: str) -> list[str]:
    return [line.split("\t")[0] for line in out.splitlines() if "\tmean foreground Dice " in line]


def test_a_manifest_without_split_column_scores_every_labelled_case(cohort, capsys):
    assert main(predict(cohort, "no_split")) == 0
    out = capsys.readouterr().out
    assert scored_cases(out) == ["c0", "c1", "c2"] and "mean over 3 cases" in out


def test_a_manifest_with_splits_scores_the_test_split_by_default_and_the_split_asked_for(cohort, capsys):
    assert main(predict(cohort, "split")) == 0
    assert scored_cases(capsys.readouterr().out) == ["c1", "c2"]
    assert main(predict(cohort, "split", "--split", "train")) == 0
    assert scored_cases(capsys.readouterr().out) == ["c0"]


@pytest.mark.parametrize("manifest, extra, says", [
    ("split", ["--split", "val"], "no labelled case (a 'label' path) in split 'val' (splits present: test, train;"),
    ("no_split", ["--split", "test"], "in split 'test' (no split column;"),
    ("no_split", ["--dataset", "elsewhere"], "in dataset 'elsewhere'"),
    ("no_label", [], "no labelled case (a 'label' path) in split 'test' (splits present: test, train; 3 cases, 0 labelled)")])
def test_nothing_to_score_is_one_line_naming_the_manifest_and_a_non_zero_exit(cohort, capsys, manifest, extra, says):
    assert main(predict(cohort, manifest, *extra)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: {cohort[manifest]}: ") and says in captured.err
