"""The volume-adjusted mass (lift): pure-noise maps carry no explanation, whatever the region volumes.

For a diffuse map the raw mass of a region is its volume share: two independent noise maps
"agree" on raw mass, their context mass is 1 - volume share, and a change of region volumes
between cohorts reads as drift. On the lift they do not.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agg2exp_core import store
from agg2exp_core.aggregate import context_mass, local_matrices, region_mean_attribution, roi_importance
from agg2exp_core.analysis import agreement, drift
from agg2exp_core.labels import roi_specs
from agg2exp_core.pipeline.importer import volume_from_means
from agg2exp_core.vocabulary import VOLUME_TARGET

SHAPE = (32, 32, 32)
N_REGIONS = 8


def label_map(shares: np.ndarray) -> np.ndarray:
    """Slabs of the given volume shares along the flattened volume (region ids 0..r-1)."""
    counts = np.floor(np.asarray(shares) * np.prod(SHAPE)).astype(int)
    counts[0] += int(np.prod(SHAPE)) - counts.sum()
    return np.repeat(np.arange(len(shares)), counts).reshape(SHAPE)


def case_shares(rng: np.random.Generator, background: float = 0.5) -> np.ndarray:
    rest = rng.dirichlet(np.full(N_REGIONS - 1, 3.0)) * (1 - background)
    return np.concatenate([[background], rest])


def noise_map(rng: np.random.Generator) -> np.ndarray:
    return np.abs(rng.standard_normal((1, *SHAPE))).astype(np.float32)


def noise_matrices(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    return local_matrices(noise_map(rng), labels, N_REGIONS)


def test_two_noise_maps_agree_on_raw_mass_and_not_on_the_lift():
    rng = np.random.default_rng(0)
    raw_a, raw_b, lift_a, lift_b = [], [], [], []
    for _ in range(40):
        labels = label_map(case_shares(rng))
        a, b = noise_matrices(rng, labels), noise_matrices(rng, labels)
        raw_a.append(a["abs"]), raw_b.append(b["abs"]), lift_a.append(a["lift"]), lift_b.append(b["lift"])
    raw = agreement.agreement(np.stack(raw_a), np.stack(raw_b), [1]).set_index("target_id").loc[1]
    lifted = agreement.agreement(np.stack(lift_a), np.stack(lift_b), [1]).set_index("target_id").loc[1]
    assert raw.spearman_mean > 0.9                          # the volumes, not the maps, agree
    assert abs(lifted.spearman_mean) < 0.1 and lifted.spearman_low < 0 < lifted.spearman_high


def test_context_mass_of_noise_is_one_minus_volume_share_and_its_lift_is_one():
    rng = np.random.default_rng(1)
    shares = case_shares(rng)
    labels = label_map(shares)
    matrices = local_matrices(np.concatenate([noise_map(rng) for _ in range(N_REGIONS)]), labels, N_REGIONS)
    true_shares = np.bincount(labels.ravel(), minlength=N_REGIONS) / labels.size
    np.testing.assert_allclose(matrices["volume"], true_shares)
    np.testing.assert_allclose(context_mass(matrices["abs"]), 1 - true_shares, atol=0.01)
    np.testing.assert_allclose(matrices["lift"], 1.0, atol=0.1)


def test_raw_rows_still_sum_to_one_and_the_lift_is_mass_over_share():
    rng = np.random.default_rng(2)
    labels = label_map(case_shares(rng))
    attributions = rng.standard_normal((3, *SHAPE))
    effusion = np.zeros(SHAPE, dtype=bool)
    effusion[:4] = True                                     # an extra RoI overlapping the class regions
    matrices = local_matrices(attributions, labels, N_REGIONS, {"effusion": effusion})
    for kind in ("abs", "pos", "neg"):
        np.testing.assert_allclose(matrices[kind][:, :N_REGIONS].sum(axis=1), 1.0)
    np.testing.assert_allclose(matrices["lift"], matrices["abs"] / matrices["volume"])
    assert matrices["volume"][-1] == pytest.approx(effusion.mean())
    np.testing.assert_allclose(roi_importance(attributions, labels, "lift", N_REGIONS), matrices["lift"][:, :N_REGIONS])


def test_an_empty_region_has_no_lift():
    labels = np.zeros(SHAPE, dtype=int)
    labels[:8] = 1
    lift = local_matrices(np.ones((1, *SHAPE)), labels, 3)["lift"]
    assert lift[0, :2] == pytest.approx([1.0, 1.0]) and np.isnan(lift[0, 2])


def test_volume_only_null_is_high_on_raw_mass_and_about_zero_on_the_lift():
    rng = np.random.default_rng(3)
    shares = np.stack([case_shares(rng) for _ in range(30)])
    raw_mean, raw_high = agreement.volume_null(shares, "abs")
    lift_mean, lift_high = agreement.volume_null(shares, "lift")
    assert raw_mean > 0.9 and raw_high >= raw_mean
    assert abs(lift_mean) < 0.05 and lift_high < 0.15
    assert np.isnan(agreement.volume_null(np.full((3, 4), np.nan), "lift")[0])


def test_published_means_give_back_the_volumes_and_the_lift():
    rng = np.random.default_rng(4)
    masses, means, expected_shares, expected_lift = [], [], [], []
    for _ in range(3):
        labels = label_map(case_shares(rng))
        attributions = rng.gamma(2.0, size=(N_REGIONS, *SHAPE)) * (1 + labels)       # not a diffuse map
        matrices = local_matrices(attributions, labels, N_REGIONS)
        masses.append(matrices["abs"]), expected_shares.append(matrices["volume"])
        expected_lift.append(matrices["lift"])
        means.append(region_mean_attribution(attributions, labels, N_REGIONS))
    shares, lifts = volume_from_means(np.stack(masses), np.stack(means))
    np.testing.assert_allclose(shares, np.stack(expected_shares), rtol=1e-9)
    np.testing.assert_allclose(lifts, np.stack(expected_lift), rtol=1e-9)
    absent_shares, absent_lifts = volume_from_means(np.stack(masses), None)
    assert np.isnan(absent_shares).all() and np.isnan(absent_lifts).all()


def _noise_store(tmp_path, background_new: float, n: int = 15, seed: int = 5):
    """Two datasets of noise maps; 'new' has a larger background share (a wider field of view)."""
    rng = np.random.default_rng(seed)
    names = ["background"] + [f"r{k}" for k in range(1, N_REGIONS)]
    db = tmp_path / "noise.duckdb"
    with store.open_writer(db) as con:
        ids = store.upsert_rois(con, roi_specs(names))
        roi_ids = [ids[name] for name in names]
        store.ensure_run(con, "run", "vg", {}, "m", names, source="precompute")
        for dataset, background in (("ref", 0.5), ("new", background_new)):
            for i in range(n):
                case_id = f"{dataset}{i:02d}"
                store.upsert_cases(con, pd.DataFrame([{"case_id": case_id, "dataset": dataset, "split": "test"}]))
                labels = label_map(case_shares(rng, background))
                m = local_matrices(np.concatenate([noise_map(rng) for _ in range(2)]), labels, N_REGIONS)
                rows = store.importance_rows("run", case_id, roi_ids[1:3], roi_ids, m["abs"], m["pos"], m["neg"],
                                             m["volume"], m["lift"])
                store.write_case(con, "run", case_id, rows)
    return db


def test_drift_of_noise_maps_is_a_volume_effect_the_lift_does_not_report(tmp_path):
    db = _noise_store(tmp_path, background_new=0.8)
    with store.open_writer(db) as con:
        drift.drift_analysis(con, "run", drift.DriftConfig("ref", n_permutations=499))
        tests = con.execute("SELECT target_id, p_value, p_value_raw, kind FROM drift ORDER BY target_id").df()
    control = tests[tests.target_id == VOLUME_TARGET].iloc[0]
    classes = tests[tests.target_id != VOLUME_TARGET]
    assert control.kind == "volume" and control.p_value < 0.01              # the volumes drift
    assert (classes.kind == "lift").all()
    assert (classes.p_value_raw < 0.01).all()                                # raw mass reads it as drift
    assert (classes.p_value > 0.05).all()                                    # the lift does not


def test_agreement_of_stored_runs_reports_the_volume_null(tmp_path):
    db = _noise_store(tmp_path, background_new=0.5)
    with store.open_writer(db) as con:
        rows = con.execute("SELECT * REPLACE ('other' AS run_id) FROM local_importance").df()
        con.register("_rows", rows)
        con.execute("INSERT INTO local_importance SELECT * FROM _rows")
        store.ensure_run(con, "other", "ig", {}, "m", [], source="precompute")   # the same maps again
        for kind in ("abs", "lift"):
            summary = agreement.analyze_agreement(con, "run", kind=kind)
            assert set(summary.kind) == {kind} and summary.null_mean.notna().all()
        stored = con.execute("SELECT kind, null_mean, null_high FROM method_agreement").df()
    assert set(stored.kind) == {"lift"} and (stored.null_mean.abs() < 0.1).all()
