"""Uncertainty features in the pipeline: written with each case by precompute (once per model and case,
nothing half-written), backfilled by compute_uncertainty / ``agg2exp uncertainty``, read back by the query."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from agg2exp_core import store
from agg2exp_core.cli import main
from agg2exp_core.errors import InputError
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.models import load_model
from agg2exp_core.models import uncertainty as u
from agg2exp_core.pipeline import uncertainty_stage
from agg2exp_core.pipeline.precompute import precompute
from agg2exp_core.pipeline.uncertainty_stage import compute_uncertainty
from agg2exp_core.store.queries.uncertainty import uncertainty_features
from tests.core.pipeline.test_precompute import tiny  # noqa: F401 - the tiny phantom cohort and network

N_CASES, VOXEL_ML, N_VOXELS = 6, 12.0 ** 3 / 1000, 32 * 24 * 24  # generate_cohort(shape=(32, 24, 24), 12 mm)
SINGLE = [f for f in u.FEATURES if f != u.FOLD_AGREEMENT]


@pytest.fixture(scope="module")
def computed(tiny, tmp_path_factory):  # noqa: F811
    root, manifest, checkpoint = tiny
    db = tmp_path_factory.mktemp("uncertainty") / "store.duckdb"
    summary = precompute(manifest, checkpoint, db, "vg", progress=False)
    assert len(summary.done) == N_CASES and not summary.failed
    return db, load_model(checkpoint, device="cpu").checkpoint_sha256


def features_in(db, sha):
    with store.connect(db, read_only=True) as con:
        return uncertainty_features(con, sha)


def test_precompute_stores_every_feature_per_case_and_class(computed):
    db, sha = computed
    frame = features_in(db, sha)
    assert list(frame.columns[:2]) == ["case_id", "class_id"] and set(frame.columns[2:]) == set(SINGLE)
    assert len(frame) == N_CASES * len(THORAX_LABELS) and frame.case_id.nunique() == N_CASES
    # the classes partition the volume: their predicted volumes add up to the whole grid
    np.testing.assert_allclose(frame.groupby("case_id")[u.VOLUME_ML].sum(), N_VOXELS * VOXEL_ML)
    for name in (u.AGREEMENT, u.AGREEMENT_CLEAN, u.ENTROPY_MASK, u.MARGIN_MASK, u.LARGEST_SHARE):
        values = frame[name].dropna()
        assert len(values) and values.between(0, 1).all(), name
    present = frame[frame[u.VOLUME_ML] > 0]
    assert present[u.ENTROPY_MASK].notna().all() and (present[u.COMPONENTS] >= 1).all()
    assert frame.loc[frame[u.VOLUME_ML] == 0, u.ENTROPY_MASK].isna().all()  # no mask: undefined, not stored
    with store.connect(db, read_only=True) as con:
        class_ids = {r[0] for r in con.execute("SELECT roi_id FROM rois WHERE is_class").fetchall()}
    assert set(frame.class_id) == class_ids  # keyed like dice: the class's RoI id


def test_a_second_run_of_the_same_model_reuses_the_rows(computed, tiny, tmp_path, monkeypatch):  # noqa: F811
    _, manifest, checkpoint = tiny
    db, sha = computed
    copy = shutil.copy(db, tmp_path / "copy.duckdb")
    before = features_in(copy, sha)

    def must_not_run(*args, **kwargs):
        raise AssertionError("features computed again")

    monkeypatch.setattr(uncertainty_stage, "uncertainty_features", must_not_run)
    again = precompute(manifest, checkpoint, copy, "vg", classes=[1, 2], progress=False)
    assert len(again.done) == N_CASES and not again.failed  # another run, same model: no case recomputed them
    after = features_in(copy, sha)
    assert after.equals(before)


def test_a_case_whose_features_fail_leaves_nothing_half_written(tiny, tmp_path, monkeypatch):  # noqa: F811
    _, manifest, checkpoint = tiny
    real = uncertainty_stage.uncertainty_features

    def fails_on_one(model, image, logits, spacing, spec=None):
        if float(image.sum()) == broken_sum[0]:
            raise RuntimeError("TTA exploded")
        return real(model, image, logits, spacing, spec)

    from agg2exp_core.io.images import load_case
    from agg2exp_core.io.manifest import read_manifest

    model = load_model(checkpoint, device="cpu")
    row = read_manifest(manifest).to_dict("records")[0]
    broken_sum = [float(load_case(row, model.preprocessing, n_labels=model.n_classes).image.sum())]
    monkeypatch.setattr(uncertainty_stage, "uncertainty_features", fails_on_one)
    db = tmp_path / "store.duckdb"
    summary = precompute(manifest, checkpoint, db, "vg", progress=False)
    assert summary.failed == [row["case_id"]] and len(summary.done) == N_CASES - 1
    with store.connect(db, read_only=True) as con:
        for table in ("local_importance", "case_uncertainty", "dice", "case_status"):
            n = con.execute(f"SELECT count(*) FROM {table} WHERE case_id = ?", [row["case_id"]]).fetchone()[0]
            assert n == 0, table
        stage = con.execute("SELECT stage, message FROM failures").fetchall()
    assert stage == [("explain", "TTA exploded")]


def test_backfill_and_a_rerun_give_precomputes_features_and_resume(computed, tiny, tmp_path, capsys):  # noqa: F811
    _, manifest, checkpoint = tiny
    db, sha = computed
    bare = tmp_path / "bare.duckdb"
    assert main(["precompute", "--manifest", str(manifest), "--model", str(checkpoint), "--db", str(bare),
                 "--no-uncertainty"]) == 0
    assert features_in(bare, sha).empty
    assert main(["uncertainty", "--manifest", str(manifest), "--model", str(checkpoint), "--db", str(bare),
                 "--cases", "ref-000,ext-000"]) == 0
    assert "2 computed, 0 already done, 0 failed" in capsys.readouterr().out
    # a rerun of precompute skips the done cases but gives them the features they lack (a store built before)
    rerun = precompute(manifest, checkpoint, bare, "vg", progress=False)
    assert not rerun.done and len(rerun.skipped) == N_CASES
    assert rerun.notes == [f"uncertainty features added to {N_CASES - 2} case(s) done before"]
    backfilled, stored = features_in(bare, sha), features_in(db, sha)
    assert backfilled[["case_id", "class_id"]].equals(stored[["case_id", "class_id"]])
    np.testing.assert_allclose(backfilled[SINGLE].to_numpy(float), stored[SINGLE].to_numpy(float), rtol=1e-9)
    again = compute_uncertainty(manifest, checkpoint, bare, progress=False)
    assert not again.done and len(again.skipped) == N_CASES


def test_backfill_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, capsys):  # noqa: F811
    _, manifest, checkpoint = tiny
    db = tmp_path / "never.duckdb"
    with pytest.raises(InputError, match="case id"):
        compute_uncertainty(manifest, checkpoint, db, case_ids=["nope"], progress=False)
    assert main(["uncertainty", "--manifest", str(tmp_path / "missing.csv"), "--model", str(checkpoint),
                 "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.csv" in err[0]
    assert not db.exists()


def test_a_case_that_cannot_be_read_fails_alone(tiny, tmp_path, capsys):  # noqa: F811
    root, manifest, checkpoint = tiny
    cohort = shutil.copytree(manifest.parent, tmp_path / "cohort")
    broken = sorted((cohort / "images").glob("*.nii.gz"))[0]
    broken.write_bytes(b"not a NIfTI")
    db = tmp_path / "store.duckdb"
    code = main(["uncertainty", "--manifest", str(cohort / manifest.name), "--model", str(checkpoint),
                 "--db", str(db)])
    captured = capsys.readouterr()
    assert code == 1 and f"{N_CASES - 1} computed, 0 already done, 1 failed" in captured.out
    failed = [line for line in captured.out.splitlines() if line.startswith("failed")]  # tqdm.write: stdout
    assert len(failed) == 1 and failed[0].startswith("failed ext-000 (uncertainty): ") and broken.name in failed[0]
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT case_id) FROM case_uncertainty").fetchone()[0] == N_CASES - 1
