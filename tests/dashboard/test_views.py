"""The views without Streamlit's runtime: a context built from the store, the numbers of a view against the
store's rows, and the plain-text problems a page shows instead of a figure."""
import numpy as np
import pytest

from dashboard import data
from dashboard.filters import CohortFilter
from dashboard.views import common, heat_map, outliers


@pytest.fixture(scope="module")
def ctx(synthetic_store):
    ref = data.store_ref(synthetic_store["path"])
    return common.open_context(ref, synthetic_store["run_ids"]["vg"], CohortFilter(datasets=("external",)))


def test_a_context_is_the_run_and_its_filtered_cases(ctx, synthetic_store):
    assert ctx.run_id == synthetic_store["run_ids"]["vg"] and set(ctx.cases.dataset) == {"external"}
    assert 0 < len(ctx.cases) < ctx.n_run_cases
    with pytest.raises(ValueError, match="run 'nope' is not in the store"):
        common.open_context(ctx.ref, "nope")


def test_the_global_map_holds_the_stores_cohort_means_in_its_order(ctx):
    shown = heat_map.global_map(ctx, heat_map.MapChoices("abs", "id"))
    rows = data.global_matrix(ctx.ref, ctx.run_id, ctx.cohort, "abs").set_index(["target_id", "source_id"])["mean"]
    view = shown.matrix
    expected = np.array([[rows.get((t.roi_id, s.roi_id), np.nan) for s in view.sources] for t in view.targets])
    np.testing.assert_allclose(view.matrix, expected)
    assert [t.roi_id for t in view.targets] == sorted(t.roi_id for t in view.targets)      # order "id"
    assert len(shown.table()) == view.matrix.size and shown.caption.startswith("Hover a cell for its 95%")


def test_too_few_permutations_for_the_fdr_are_named_and_auto_is_enough(ctx):
    few = heat_map.ComparisonChoices("abs", "sex", "F", "M", permutations="1000", fdr=True, alpha=0.05)
    n, warning = heat_map.n_permutations(ctx, few)
    n_cells = len(ctx.class_rois()) * len(ctx.rois)
    assert n == 1000 and (warning != "") == (1001 < n_cells / 0.05)
    n_auto, none = heat_map.n_permutations(ctx, heat_map.ComparisonChoices("abs", "sex", "F", "M"))
    assert none == "" and n_auto + 1 >= n_cells / 0.05


def test_a_comparison_with_a_one_case_cohort_says_so_instead_of_testing(ctx):
    oldest = float(ctx.cases.age.max())
    shown = heat_map.cohort_comparison(ctx, heat_map.ComparisonChoices("abs", "age", oldest))   # B: the oldest only
    assert shown.figure is None and shown.problem.startswith("Each cohort needs at least 2 cases")


def test_outlier_links_name_the_class_unless_the_average_was_shown(ctx):
    heart = ctx.roi_by_name("heart")
    assert outliers.case_link(ctx, "c1", heart.roi_id) == {"case": "c1", "target": "heart"}
    assert outliers.case_link(ctx, "c1", -1) == {"case": "c1"}
