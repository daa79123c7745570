"""The dashboard's data layer computes in DuckDB what the pages show: the same numbers as
numpy/pandas on the store's long rows (box statistics, whiskers and the points outside them,
per-case matrices, the cohort comparison), and evaluation runs without case_status."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agg2exp_core.analysis.compare import permutation_test
from dashboard import analytics, compute, data
from dashboard.filters import CohortFilter
from synthetic_store import read_sql


@pytest.fixture(scope="module")
def ref(synthetic_store):
    return data.store_ref(synthetic_store["path"])


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.st.cache_data.clear()
    yield
    data.st.cache_data.clear()


def long_rows(ref, run_id: str, kind: str = "abs") -> pd.DataFrame:
    """Every matrix row of a run with its case's metadata, as pandas sees it."""
    rows = read_sql(ref, f"SELECT case_id, target_id, source_id, {data.MASS_KINDS[kind]} AS value "
                           "FROM local_importance WHERE run_id = ?", [run_id])
    cases = read_sql(ref, "SELECT case_id, dataset, sex, age FROM cases")
    return rows.merge(cases, on="case_id")


def tukey(values: np.ndarray) -> dict:
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])       # linear, as DuckDB's quantile_cont
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    inside = values[(values >= lo) & (values <= hi)]
    return dict(n=len(values), mean=values.mean(), q1=q1, median=median, q3=q3, lowerfence=inside.min(),
                upperfence=inside.max(), n_low=int((values < lo).sum()), n_high=int((values > hi).sum()), lo=lo, hi=hi)


def test_source_distribution_is_tukeys_box_of_the_filtered_rows(ref, synthetic_store):
    run_id = synthetic_store["run_ids"]["vg"]
    heart = synthetic_store["roi_ids"]["heart"]
    cohort = CohortFilter(sexes=("F",))
    rows = long_rows(ref, run_id, "pos")
    rows = rows[(rows.sex == "F") & (rows.target_id == heart)]
    result = data.source_distribution(ref, run_id, cohort, heart, "pos")
    assert result.boxes.source_id.tolist() == sorted(rows.source_id.unique())
    for box in result.boxes.itertuples():
        expected = tukey(rows[rows.source_id == box.source_id].value.to_numpy())
        for key in ("n", "mean", "q1", "median", "q3", "lowerfence", "upperfence", "n_low", "n_high"):
            assert getattr(box, key) == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (box.source_id, key)
        part = rows[rows.source_id == box.source_id]
        outside = set(part.case_id[(part.value < expected["lo"]) | (part.value > expected["hi"])])
        drawn = result.points[result.points.source_id == box.source_id]
        assert set(drawn.case_id) == outside          # fewer than POINTS_PER_SIDE here: all are drawn
    assert result.n_outside == len(result.points) > 0
    assert (result.points.sex == "F").all() and result.points.dice.notna().all()
    assert {"case_id", "dataset", "sex", "age", "pathologies", "dice", "value"} <= set(result.points.columns)


def test_only_the_most_extreme_points_per_box_and_side_come_back(ref, synthetic_store, monkeypatch):
    run_id = synthetic_store["run_ids"]["vg"]
    pulmonary_vein = synthetic_store["roi_ids"]["pulmonary_vein"]
    full = data.source_distribution(ref, run_id, CohortFilter(), pulmonary_vein)
    monkeypatch.setattr(data, "POINTS_PER_SIDE", 1)
    data.st.cache_data.clear()
    capped = data.source_distribution(ref, run_id, CohortFilter(), pulmonary_vein)
    pd.testing.assert_frame_equal(capped.boxes, full.boxes)           # the statistics never change
    assert capped.n_outside == full.n_outside > len(capped.points)
    for source, part in full.points.merge(full.boxes, on="source_id").groupby("source_id"):
        for high in (False, True):
            side = part[(part.value > part.upperfence) if high else (part.value < part.lowerfence)]
            kept = capped.points[(capped.points.source_id == source) & capped.points.case_id.isin(side.case_id)]
            assert len(kept) == min(len(side), 1)
            if len(side):
                assert kept.value.iloc[0] == (side.value.max() if high else side.value.min())


def test_dice_distribution_per_class(ref, synthetic_store):
    run_id = synthetic_store["run_ids"]["vg"]
    result = data.dice_distribution(ref, run_id, CohortFilter(datasets=("external",)))
    dice = read_sql(ref, "SELECT d.class_id, d.dice FROM dice d JOIN cases c USING (case_id) "
                           "WHERE c.dataset = 'external'")
    assert len(result.boxes) == dice.class_id.nunique() == len(synthetic_store["class_names"])
    for box in result.boxes.itertuples():
        expected = tukey(dice[dice.class_id == box.class_id].dice.to_numpy())
        assert (box.n, box.median, box.upperfence) == pytest.approx((expected["n"], expected["median"],
                                                                     expected["upperfence"]))
    summary = analytics.dice_summary(result.boxes, [r for r in analytics.roi_table(data.rois(ref)).values()])
    assert summary.n.tolist() == result.boxes.n.tolist()


def test_local_cube_holds_the_stored_rows_of_the_chosen_cases(ref, synthetic_store):
    run_id = synthetic_store["run_ids"]["smoothgrad"]
    chosen = synthetic_store["case_ids"][::7] + ["no-such-case"]
    cases, targets, sources, cube = data.local_cube(ref, run_id, chosen, "neg")
    assert cases == sorted(chosen[:-1]) and cube.shape == (len(cases), len(targets), len(sources))
    rows = long_rows(ref, run_id, "neg")
    rows = rows[rows.case_id.isin(cases)]
    expected = rows.pivot_table(index="case_id", columns=["target_id", "source_id"], values="value")
    assert np.array_equal(cube.reshape(len(cases), -1), expected.loc[cases].to_numpy())
    assert targets == sorted(rows.target_id.unique()) and sources == sorted(rows.source_id.unique())


def test_cohort_comparison_equals_the_permutation_test_of_the_stored_matrices(ref, synthetic_store):
    run_id = synthetic_store["run_ids"]["vg"]
    cohort = CohortFilter()
    split = analytics.split_cohort(data.cohort_cases(ref, run_id, cohort), "sex", "F", "M")
    comparison = compute.cohort_comparison(ref, run_id, cohort, "abs", split, 300, 5, 0.05, True)
    rows = long_rows(ref, run_id)
    wide = rows.pivot_table(index="case_id", columns=["target_id", "source_id"], values="value")
    target_ids = [t.roi_id for t in comparison.targets]
    source_ids = [s.roi_id for s in comparison.sources]
    columns = pd.MultiIndex.from_product([target_ids, source_ids])
    a = wide.loc[list(split.cases_a), columns].to_numpy().reshape(-1, len(target_ids), len(source_ids))
    b = wide.loc[list(split.cases_b), columns].to_numpy().reshape(-1, len(target_ids), len(source_ids))
    expected = permutation_test(a, b, n_permutations=300, seed=5, alpha=0.05, fdr=True,
                                stop_at=compute.COMPARISON_STOP_AT)       # the page's sequential p-values
    got = comparison.result
    assert np.array_equal(got.p_values, expected.p_values) and np.array_equal(got.significant, expected.significant)
    assert np.allclose(got.difference, expected.difference, rtol=0, atol=1e-15)


def test_permutation_batches_do_not_change_the_test():
    """The dashboard tunes the batch size for 20,000 cases; the labels drawn stay the same."""
    rng = np.random.default_rng(0)
    a, b = rng.random((23, 3, 4)), rng.random((17, 3, 4)) + 0.05
    small = permutation_test(a, b, n_permutations=501, seed=3, batch_size=7)
    large = permutation_test(a, b, n_permutations=501, seed=3, batch_size=compute.PERMUTATION_BATCH)
    assert np.array_equal(small.p_values, large.p_values) and np.array_equal(small.q_values, large.q_values)
    for stop_at in (3, compute.COMPARISON_STOP_AT):  # a cell stops at the same permutation in any batching
        small = permutation_test(a, b, n_permutations=501, seed=3, batch_size=7, stop_at=stop_at)
        large = permutation_test(a, b, n_permutations=501, seed=3, batch_size=compute.PERMUTATION_BATCH,
                                 stop_at=stop_at)
        assert np.array_equal(small.p_values, large.p_values)


def test_evaluation_runs_are_filtered_by_their_cases_metadata(ref, synthetic_store):
    runs = tuple(synthetic_store["eval_run_ids"].values())
    assert read_sql(ref, "SELECT count(*) AS n FROM case_status WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                      [list(runs)]).n.iloc[0] == 0
    summary = data.method_eval_summary(ref, runs, CohortFilter())
    assert set(summary.run_id) == set(runs) and (summary.n_cases == 8).all()
    assert data.method_eval_summary(ref, runs, CohortFilter(datasets=("external",))).empty
    curves = data.perturbation_summary(ref, runs, CohortFilter(splits=("test",)))
    assert set(curves.run_id) == set(runs) and set(curves.ordering) == {"morf", "lerf"}
    assert data.evaluated_case_count(ref, runs) == 8


def test_perturbation_curves_are_normalised_per_case_and_class(tmp_path):
    """Two curves of very different scales: each is rescaled to (s - s_min) / (s(0) - s_min) before
    the median, so the summary is the median of the normalised curves (a flat curve drops out)."""
    from agg2exp_core import store as core_store

    path = tmp_path / "curves.duckdb"
    with core_store.open_writer(path) as con:
        con.execute("INSERT INTO cases (case_id, dataset, split) VALUES ('a', 'd', 'test'), ('b', 'd', 'test')")
        rows = []
        for case, target, morf, lerf in (("a", 1, [10.0, 4.0, 0.0], [10.0, 9.0, 0.0]),
                                         ("b", 1, [-50_000.0, -80_000.0, -90_000.0], [-50_000.0, -60_000.0, -90_000.0]),
                                         ("b", 2, [3.0, 3.0, 3.0], [3.0, 3.0, 3.0])):
            for ordering, values in (("MoRF", morf), ("LeRF", lerf)):
                rows += [["r", case, target, ordering, k, k / 2, v] for k, v in enumerate(values)]
        con.executemany("INSERT INTO perturbation_curve VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    summary = data.perturbation_summary(data.store_ref(path), ("r",), CohortFilter()).set_index(["ordering", "step"])
    # normalised: a MoRF 1, 0.4, 0 / LeRF 1, 0.9, 0; b MoRF 1, 0.25, 0 / LeRF 1, 0.75, 0; b class 2 is flat
    assert summary.loc[("morf", 1), "median"] == pytest.approx((0.4 + 0.25) / 2)
    assert summary.loc[("lerf", 1), "median"] == pytest.approx((0.9 + 0.75) / 2)
    assert (summary.xs(0, level="step")["median"] == 1).all() and (summary.xs(2, level="step")["median"] == 0).all()
    assert (summary.n == 2).all()


def test_permutation_labels_are_the_seeded_random_subsets_of_the_cohort_labels():
    """The p-values count, per cell, the seeded random label assignments (``_label_batches``: each
    row exactly n_a labels of cohort A) whose Welch t is as extreme as observed; a plain re-count
    with SciPy's t in float64 gives the same p-values."""
    from scipy.stats import ttest_ind

    from agg2exp_core.analysis.compare import _label_batches

    rng = np.random.default_rng(1)
    a, b = rng.random((15, 2, 3)), rng.random((11, 2, 3)) + np.array([[0.6, 0, 0], [0, 0, 0]])
    n_permutations = 400
    result = permutation_test(a, b, n_permutations=n_permutations, seed=9, fdr=False, batch_size=64)
    pooled = np.concatenate([a, b]).reshape(26, -1)
    labels = np.concatenate(list(_label_batches(np.r_[np.ones(15), np.zeros(11)], n_permutations, 1000, 9)))
    assert labels.shape == (n_permutations, 26) and np.all(labels.sum(axis=1) == 15)
    sides = np.argsort(labels == 0, axis=1, kind="stable")       # each row: A's 15 cases, then B's 11
    t = ttest_ind(pooled[sides[:, :15]], pooled[sides[:, 15:]], axis=1, equal_var=False).statistic
    observed = np.abs(ttest_ind(a.reshape(15, -1), b.reshape(11, -1), equal_var=False).statistic)
    exceed = (np.abs(t) >= observed - 1e-5 * np.maximum(1, observed)).sum(axis=0)
    assert np.array_equal(result.p_values.ravel(), (1 + exceed) / (1 + n_permutations))
    assert result.p_values[0, 0] == pytest.approx(1 / 401)          # the planted shift
