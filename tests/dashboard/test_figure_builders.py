"""The figures package: the template travels with each figure (no global state set at import), the matrix
heat map draws a MatrixView with its dendrograms and intervals, the comparison draws a PermutationResult."""
import subprocess
import sys

import numpy as np

from agg2exp_core.analysis.compare import permutation_test
from dashboard import analytics, figures
from dashboard.matrices import CellIntervals, MatrixView

ROIS = [analytics.Roi(i, f"r{i}", g, "#123456", True) for i, g in enumerate(["organ", "bone", "organ", "muscle"])]


def test_importing_the_figures_leaves_plotlys_default_template_alone():
    """(Streamlit registers its own default template when imported: the figures must not need Streamlit.)"""
    code = ("import sys, plotly.io as pio; before = pio.templates.default; import dashboard.figures; "
            "print(before == pio.templates.default, 'streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_every_figure_carries_the_dashboard_template():
    view = MatrixView(ROIS, ROIS, np.full((4, 4), 0.25), np.ones((4, 4), int))
    figure = figures.matrix_heatmap(view, "t", "p")
    assert figure.layout.template.layout.plot_bgcolor == "white"      # plotly_white, not plotly's grey
    assert figure.to_dict()["layout"]["template"]["layout"]["plot_bgcolor"] == "white"


def test_a_clustered_view_is_drawn_with_its_dendrograms_and_intervals():
    matrix = np.random.default_rng(1).random((4, 4))
    order = analytics.order_matrix(matrix, [r.grp for r in ROIS], [r.grp for r in ROIS], "cluster")
    view = MatrixView([ROIS[i] for i in order.rows], [ROIS[j] for j in order.columns],
                      matrix[np.ix_(order.rows, order.columns)], np.full((4, 4), 7), order.row_tree, order.column_tree)
    intervals = CellIntervals(view.matrix - 0.1, view.matrix + 0.1, "test")
    figure = figures.matrix_heatmap(view, "t", "p", intervals=intervals)
    lines = [t for t in figure.data if t.type == "scatter"]
    assert len(lines) == 2 and all(t.mode == "lines" for t in lines)            # row and column trees
    heat = next(t for t in figure.data if t.type == "heatmap")
    assert heat.customdata[0][0][2] == 7 and "n cases" in heat.hovertemplate
    assert heat.customdata[0][0][3] == f"[{view.matrix[0, 0] - 0.1:.4f}, {view.matrix[0, 0] + 0.1:.4f}]"
    flat = figures.matrix_heatmap(view, "t", "p", with_trees=False, with_counts=False)
    assert [t.type for t in flat.data] == ["heatmap"] and "n cases" not in flat.data[0].hovertemplate


def test_the_comparison_draws_a_permutation_result_and_dots_its_significant_cells():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (12, 4, 4)), rng.normal(0, 1, (12, 4, 4))
    a[:, 1, 2] += 5.0                                                            # one planted difference
    result = permutation_test(a, b, n_permutations=400, seed=0, fdr=True)
    figure = figures.difference_heatmap(result, ROIS, ROIS, ("A", "B"), "t", "p")
    heat, dots = figure.data
    assert (list(dots.y), list(dots.x)) == ([1], [2])
    assert heat.zmin == -heat.zmax and heat.zmax == np.abs(result.difference).max()
    assert "q (BH)" in heat.hovertemplate and heat.customdata[1][2][5] == f"{result.q_values[1, 2]:.3g}"
