"""The signed colour scale of causal effects: zero-centred, symmetric, signs and SE in the hover."""
import numpy as np
import pandas as pd

from dashboard import figures
from dashboard.analytics import Roi
from dashboard.matrices import SignedMatrix

A, B = Roi(1, "aorta", "cardiovascular", "#d62728", True), Roi(2, "ribs", "bone", "#1f77b4", True)


def test_signed_heatmap_is_zero_centred_and_shows_signs_and_se():
    matrix = np.array([[2.5, -4.0], [np.nan, 0.001]])
    se = np.array([[0.1, 0.5], [np.nan, np.nan]])
    fig = figures.signed_heatmap(SignedMatrix([A, B], [A, "block 0"], matrix, se, np.array([[3, 3], [0, 1]])),
                                 "t", "p")
    heat = fig.data[0]
    assert heat.zmid == 0 and heat.zmin == -4.0 and heat.zmax == 4.0 and heat.colorscale[0][1] != heat.colorscale[-1][1]
    cells = heat.customdata
    assert cells[0][0][2] == "+2.5" and cells[0][1][2] == "−4" and cells[0][1][3] == "0.5"
    assert cells[1][0][2] == "n/a" and cells[1][1][3] == "n/a" and cells[1][1][2] == "+0.001"
    assert list(fig.layout.xaxis.ticktext)[1] == "block 0"   # components are plain names


def test_signed_boxplot_marks_zero_and_carries_each_case_se():
    values = pd.DataFrame({"case_id": ["c1", "c2", "c1"], "source_id": [1, 1, 2], "ate": [1.5, -0.5, 2.0],
                           "se": [0.2, np.nan, 0.1], "n": [5, 1, 5], "dataset": ["d", "d", "d"]})
    fig = figures.signed_boxplot(values, [A, B], A, "t", "p")
    boxes = [t for t in fig.data if t.type == "box"]
    assert list(boxes[0].y) == [1.5, -0.5] and [c[1] for c in boxes[0].customdata] == ["0.2", "n/a"]
    assert any(shape.y0 == 0 for shape in fig.layout.shapes)
    assert figures.signed_bound([np.nan]) == 1.0 and figures.signed_bound([-3, 2]) == 3.0
