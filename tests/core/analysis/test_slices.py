"""Failure slices: the rank-sum test against SciPy, a planted subgroup found at rank 1 with its members,
the simulated null's rate of any significant slice, power, labels vs expected Dice, pruning, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from agg2exp_core.analysis import slices
from agg2exp_core.analysis.slice_candidates import field_conditions, metadata_candidates
from agg2exp_core.analysis.slice_store import find_failure_slices
from agg2exp_core.analysis.slices import SliceConfig, rank_sum_test
from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import AVERAGE_TARGET
from planted_slices import null_inputs, skewed_dice

ALPHA = 0.05


def planted(n=120, drop=0.12, seed=0, class_id=3, labelled=True):
    """Null inputs with class ``class_id``'s Dice lowered by ``drop`` on scanner B; (inputs, members)."""
    inputs = null_inputs(n, classes=4, seed=seed, labelled=labelled)
    hit = (inputs.metadata.scanner == "B").to_numpy()
    table = inputs.dice if labelled else inputs.expected
    table[class_id] = np.where(hit, table[class_id] - drop, table[class_id])
    table[AVERAGE_TARGET] = table[[1, 2, 3, 4]].mean(axis=1)
    return inputs, sorted(np.asarray(inputs.case_ids)[hit])


def test_rank_sum_test_is_scipys_one_sided_mann_whitney_with_ties():
    rng = np.random.default_rng(0)
    y = np.round(rng.normal(size=40), 1)                      # ties on purpose
    masks = rng.random((6, 40)) < 0.3
    z, p, effect = rank_sum_test(masks, y)
    for k, mask in enumerate(masks):
        expected = stats.mannwhitneyu(y[mask], y[~mask], alternative="less", method="asymptotic").pvalue
        assert p[k] == pytest.approx(expected, rel=1e-9)
        assert effect[k] == pytest.approx(y[~mask].mean() - y[mask].mean())
    batch = rank_sum_test(masks, np.stack([y, -y]))[1]         # repetitions at once: the same answers
    assert np.allclose(batch[0], p)


def test_planted_scanner_failure_is_rank_one_with_exactly_its_members():
    inputs, members = planted()
    result = find_failure_slices(inputs, config=SliceConfig())
    top = result.slices[(result.slices.class_id == 3) & (result.slices["rank"] == 1)].iloc[0]
    assert top.description == "scanner = B" and top.source == "metadata" and bool(top.uses_labels)
    assert sorted(result.members.case_id[result.members.slice_id == top.slice_id]) == members
    assert top.n == len(members) and top.q_value < ALPHA
    dice = inputs.dice[3].to_numpy()
    hit = np.isin(inputs.case_ids, members)
    assert top.effect == pytest.approx(dice[~hit].mean() - dice[hit].mean())
    # The unaffected classes report nothing; every cell of the "why" belongs to the slice's class.
    assert set(result.slices.class_id) <= {3, AVERAGE_TARGET}
    cells = result.cells[result.cells.slice_id == top.slice_id]
    assert len(cells) == min(SliceConfig().top_cells, len(inputs.sources)) and set(cells.target_id) == {3}


def test_null_rate_of_any_significant_slice_is_at_most_alpha():
    """2,000 simulated cohorts without an effect (skewed Dice with failures, 4 classes and their mean,
    metadata and explanation-cluster candidates): BH over all candidates reports any slice in at most
    5 % of them (within 2 Monte-Carlo SE), and a single candidate's p is uniform (rate at 0.05)."""
    repetitions, n, classes = 2000, 80, 4
    inputs = null_inputs(n, classes, seed=1)
    config = SliceConfig()
    metadata = metadata_candidates(inputs.metadata, config.min_support, 2, config.bins, config.max_levels)
    families = [slices.class_candidates(inputs, c, metadata, config).masks for c in [AVERAGE_TARGET, 1, 2, 3, 4]]
    rng = np.random.default_rng(2)
    y = skewed_dice((repetitions, n, classes), rng)
    outcomes = [y.mean(axis=2)] + [y[:, :, k] for k in range(classes)]
    p = np.concatenate([rank_sum_test(masks, outcome)[1] for masks, outcome in zip(families, outcomes)], axis=1)
    q = stats.false_discovery_control(p, axis=1)
    any_rate = float((q < ALPHA).any(axis=1).mean())
    se = np.sqrt(ALPHA * (1 - ALPHA) / repetitions)            # 0.0049
    assert any_rate <= ALPHA + 2 * se, any_rate
    assert sum(len(f) for f in families) > 500                 # a real family, not a handful of tests
    single = (p[:, 0] < ALPHA).mean()                          # dataset = external: calibrated, not conservative only
    assert abs(single - ALPHA) <= 3 * se, single


def test_power_planted_drop_is_found_at_rank_one_in_most_cohorts():
    """A drop of 0.08 Dice on scanner B (a third of 100 cases): rank 1 of its class in >= 90 % of 40 cohorts."""
    found = 0
    config = SliceConfig(cluster_counts=())
    for seed in range(40):
        inputs, members = planted(n=100, drop=0.08, seed=100 + seed)
        result = slices.search(inputs, config)
        top = result.slices[(result.slices.class_id == 3) & (result.slices["rank"] == 1)]
        found += int(len(top) == 1 and top.description.iloc[0] == "scanner = B")
    assert found >= 36, found


def test_expected_dice_is_used_without_labels_and_labels_win_where_present():
    inputs, _ = planted(labelled=False)
    result = find_failure_slices(inputs, config=SliceConfig())
    top = result.slices[result.slices.class_id == 3].iloc[0]
    assert top.description == "scanner = B" and not top.uses_labels
    assert not result.classes.uses_labels.any()
    assert slices.search(inputs, SliceConfig(dice="labels")).slices.empty       # labels only: nothing to score


def test_annotation_bias_shows_with_true_dice_and_not_with_expected_dice():
    """Labels eroded on scanner B lower the true Dice only; the expected Dice (from the images) is unchanged."""
    inputs, _ = planted()
    inputs.expected = null_inputs(120, classes=4, seed=0).dice        # the unbiased Dice, as if estimated
    with_labels = slices.search(inputs, SliceConfig(dice="labels")).slices
    expected_only = slices.search(inputs, SliceConfig(dice="expected")).slices
    assert "scanner = B" in set(with_labels.description[with_labels.class_id == 3])
    assert "scanner = B" not in set(expected_only.description)


def test_pruning_drops_near_duplicates_and_conjunctions_explained_by_one_condition():
    inputs, members = planted()
    site = inputs.metadata.scanner.map({"B": "X"}).fillna("Y").to_numpy(object)
    site[np.flatnonzero(site == "X")[:1]] = "Y"                  # one case differs: Jaccard ~0.97
    inputs.metadata["site2"] = site
    kept = slices.search(inputs, SliceConfig(cluster_counts=())).slices
    of_class = kept[kept.class_id == 3]
    assert of_class.description.iloc[0] == "scanner = B"
    assert "site2 = X" not in set(of_class.description)         # redundant with the better-ranked slice
    assert not any("scanner = B ∧" in d or "∧ scanner = B" in d for d in of_class.description)
    unpruned = slices.search(inputs, SliceConfig(cluster_counts=(), max_overlap=1.0)).slices
    assert "site2 = X" in set(unpruned.description[unpruned.class_id == 3])
    assert len(slices.search(inputs, SliceConfig(cluster_counts=(), max_slices=1, max_overlap=1.0))
               .slices.query("class_id == 3")) == 1


def test_an_explanation_cluster_is_found_where_the_masses_and_the_dice_move_together():
    inputs = null_inputs(120, classes=4, seed=5)
    hit = np.zeros(120, dtype=bool)
    hit[:30] = True
    inputs.lift[hit, 2, 1] *= 8.0                                 # class 2's evidence moves from itself to region 1
    inputs.lift[hit, 2, 2] /= 4.0
    inputs.dice[2] = np.where(hit, inputs.dice[2] - 0.15, inputs.dice[2])
    result = slices.search(inputs, SliceConfig())
    explanation = result.slices[(result.slices.class_id == 2) & (result.slices.source == "explanation")]
    assert len(explanation) and explanation["rank"].min() == 1
    found = set(result.members.case_id[result.members.slice_id == explanation.slice_id.iloc[0]])
    truth = set(np.asarray(inputs.case_ids)[hit])
    assert len(found & truth) / len(found) >= 0.9 and len(found & truth) / len(truth) >= 0.9
    assert "more mass on class1" in explanation.description.iloc[0]


def test_conditions_of_numeric_categorical_and_set_fields():
    age = pd.Series([20.0, 30, 40, 50, 60, 70, np.nan, 80, 90])
    texts = [t for t, _ in field_conditions("age", age, 3, 20)]
    assert texts[0].startswith("age ≤") and any(" < age ≤ " in t for t in texts) and len(texts) == 5
    assert all(not mask[6] for _, mask in field_conditions("age", age, 3, 20))        # missing: in no bin
    sets = pd.Series(["a;b", "", "b", None])
    by_text = dict(field_conditions("pathologies", sets, 3, 20))
    assert by_text["pathology: b"].tolist() == [True, False, True, False]
    assert by_text["no pathology"].tolist() == [False, True, False, True]
    assert field_conditions("id", pd.Series([f"x{i}" for i in range(30)], dtype=object), 3, 20) == []


@pytest.mark.parametrize("option, kwargs", [("--slice-min-support", {"min_support": 1}),
                                            ("--slice-max-conditions", {"max_conditions": 3}),
                                            ("--slice-threshold", {"threshold": 0.0}),
                                            ("--slice-dice", {"dice": "guess"}),
                                            ("--slice-max-overlap", {"max_overlap": 0.0})])
def test_bad_settings_name_their_option(option, kwargs):
    with pytest.raises(InputError, match=option):
        SliceConfig(**kwargs)


def test_bad_inputs_are_refused():
    inputs = null_inputs(40, classes=2, seed=3)
    inputs.metadata = inputs.metadata.iloc[:10]
    with pytest.raises(ValueError, match="metadata has 10 rows for 40 cases"):
        slices.search(inputs)
    with pytest.raises(InputError, match="--run"):
        find_failure_slices(object(), None)
    tiny = null_inputs(12, classes=2, seed=4)                       # fewer than 2 x min_support cases
    result = slices.search(tiny)
    assert result.slices.empty and result.n_candidates == 0
