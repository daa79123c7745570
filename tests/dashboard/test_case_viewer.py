"""Case viewer: artefact format (float32 slices, block-averaged volumes), physical aspect, smooth display,
sub-voxel contours, units and threshold of the colour bar, window presets, crosshair, coloured surfaces."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from agg2exp_core.pipeline.artifacts import attribution_slices, block_factors, block_mean
from dashboard import case_view, figures
from dashboard.imaging import artefact, slices, surfaces

ROOT = Path(__file__).resolve().parents[2]


# --- the artefact format --------------------------------------------------------------------------

def test_block_mean_known_answers_and_partial_edge_blocks():
    volume = np.arange(5 * 4 * 3, dtype=float).reshape(5, 4, 3)
    means = block_mean(volume, (2, 2, 2))
    assert means.shape == (3, 2, 2) and means.dtype == np.float32
    assert means[0, 0, 0] == pytest.approx(volume[:2, :2, :2].mean())
    assert means[2, 1, 1] == pytest.approx(volume[4:, 2:, 2:].mean())      # edge block: 1 x 2 x 1 voxels
    even = np.random.default_rng(0).normal(size=(8, 6, 4))
    assert block_mean(even, (2, 3, 4)).mean() == pytest.approx(even.mean(), rel=1e-5)
    assert block_factors((64, 48, 48)).tolist() == [2, 2, 2]
    assert block_factors((512, 512, 300)).tolist() == [16, 16, 10]
    assert block_factors((10, 10, 10)).tolist() == [1, 1, 1]


def _colorbars(figure: go.Figure) -> list:
    return [t for t in figure.data if isinstance(t, go.Scatter) and t.marker.showscale]


def _case(shape, spacing=(6.0, 6.0, 6.0)):
    """What slice_artifact reads of a Case, without torch."""
    hu = np.full(shape, -800.0, np.float32)
    return SimpleNamespace(hu=lambda: hu, spacing=spacing, affine=np.diag([*spacing, 1.0]), label=None, rois={})


def test_kernelshap_sized_values_stay_finite_from_artefact_to_viewer(tmp_path):
    """Issue 15: float16 stored KernelSHAP logit sums (> 65504) as inf; the viewer must show numbers."""
    from agg2exp_core.pipeline.artifacts import slice_artifact, write_artifact

    shape = (12, 10, 8)
    pred = np.zeros(shape, np.uint8)
    pred[3:9, 2:8, 2:6] = 1
    attributions = np.zeros((2,) + shape, np.float32)
    attributions[1][pred == 1] = 2.5e5                  # one unit's Shapley value: far above 65504
    attributions[1][0, 0, 0] = -1.2e5
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.float16(2.5e5))       # what the old format did to it
    path = tmp_path / "case.npz"
    write_artifact(slice_artifact(_case(shape), pred, attributions, [0, 1]), path)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert arrays["attr_1_z"].dtype == np.float32 and arrays["attrvol_1"].dtype == np.float32
    artifact = artefact.CaseArtifact(arrays)
    planes = artefact.view_planes(artifact, "axial", int(artifact.class_index(1)[2]), 1)
    assert np.isfinite(planes.attr).all() and planes.attr.max() == pytest.approx(2.5e5)
    scale = artefact.class_scale(artifact, 1, 80.0)
    assert scale.top == pytest.approx(2.5e5) and np.isfinite(scale.threshold) and scale.n_nonfinite == 0
    figure = case_view.slice_view(str(path), path.stat().st_mtime_ns, "axial",
                                              tuple(artifact.class_index(1)), 1, "aorta", slices.OverlayStyle(),
                                              "kernelshap", "{}", "test")
    bar = next(iter(_colorbars(figure.figure)))
    assert bar.marker.cmax == pytest.approx(2.5e5) and all(np.isfinite(bar.marker.colorbar.tickvals))
    assert "Shapley value [logit]" in bar.marker.colorbar.title.text


def test_an_overflowed_float16_artefact_is_shown_with_its_finite_values_and_a_note():
    plane = np.full((6, 5), 100.0, np.float16)
    plane[0, 0] = np.inf
    arrays = {"ct": np.zeros((6, 5, 4), np.int16), "index_2": np.array([1, 2, 3]), "attr_2_z": plane}
    planes = artefact.view_planes(artefact.CaseArtifact(arrays), "axial", 3, 2)
    assert "not finite" in planes.note
    scale = slices.attribution_scale([planes.attr], 50)
    assert scale.top == 100.0 and scale.n_nonfinite == 1
    rgb = slices.compose(np.zeros((5, 6)), None, None, planes.attr, slices.OverlayStyle(), scale)
    assert rgb.dtype == np.uint8


def test_block_volume_is_sampled_at_voxel_centres():
    """Trilinear sampling of block means reproduces a linear ramp inside the volume."""
    x = np.arange(16, dtype=float)
    ramp = np.broadcast_to(x[:, None, None], (16, 8, 8)).copy()
    means = block_mean(ramp, (4, 2, 2))
    inner = np.array([[5.0, 3.0, 3.0], [9.5, 4.0, 2.0], [7.25, 2.0, 5.0]])
    np.testing.assert_allclose(artefact.sample_volume(means, (4, 2, 2), inner), inner[:, 0], atol=1e-5)
    mm = inner * np.array([2.0, 1.0, 1.0])           # surfaces come in mm (voxel i at i * spacing)
    np.testing.assert_allclose(surfaces.vertex_values(mm, (2.0, 1.0, 1.0), means, (4, 2, 2)), inner[:, 0],
                               atol=1e-5)


def test_attribution_away_from_the_stored_slice_comes_from_the_block_volume():
    field = np.random.default_rng(1).normal(size=(8, 6, 4)).astype(np.float32)
    arrays = {"ct": np.zeros((8, 6, 4), np.int16), "index_1": np.array([2, 3, 1]), "attrvol_block": np.array([2, 2, 2]),
              "attrvol_1": block_mean(field, (2, 2, 2))}
    arrays.update({f"attr_1_{k}": v for k, v in attribution_slices(field, [2, 3, 1]).items()})
    artifact = artefact.CaseArtifact(arrays)
    exact = artefact.view_planes(artifact, "axial", 1, 1)
    np.testing.assert_array_equal(exact.attr, slices.orient(field[:, :, 1]))
    assert exact.exact and not exact.note
    other = artefact.view_planes(artifact, "axial", 3, 1)
    assert not other.exact and "block-averaged" in other.note and other.attr.shape == (6, 8)


# --- display: physical aspect, smooth CT, sub-voxel contours ---------------------------------------

def test_display_grid_keeps_the_physical_aspect_of_anisotropic_planes():
    grid = slices.display_grid((40, 64), (5.0, 0.8))          # e.g. a coronal plane: 5 mm slices, 0.8 mm pixels
    assert grid.extent_mm == (200.0, 51.2)
    dy, dx = grid.pixel_mm
    assert abs(dy / dx - 1) < 0.25          # integer upsampling per axis: pixels close to square, placed exactly
    assert grid.shape[0] * dy == pytest.approx(200.0) and grid.shape[1] * dx == pytest.approx(51.2)
    coarse = slices.display_grid((48, 64), (6.0, 6.0))
    assert coarse.factors == (10, 10)                        # the 6 mm demo is shown 10x finer
    fine = slices.display_grid((512, 512), (0.7, 0.7))
    assert fine.factors == (1, 1)                            # a fine scan is shown as it is
    figure = figures.slice_image(np.zeros((*grid.shape, 3), np.uint8), grid.pixel_mm, "t", "p", ("R", "L"))
    assert figure.layout.yaxis.scaleanchor == "x" and figure.layout.yaxis.scaleratio == 1
    assert tuple(figure.layout.xaxis.range) == pytest.approx((0, 51.2))
    assert tuple(figure.layout.yaxis.range) == pytest.approx((200.0, 0))


def _disc(n, radius, centre):
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    return ((yy - centre) ** 2 + (xx - centre) ** 2 <= radius ** 2).astype(np.uint8)


@pytest.mark.parametrize("radius", [3.7, 4.3, 5.2])
def test_label_contours_fall_between_voxels_without_staircase_corners(radius):
    """A disc sampled on 6 mm voxels: the displayed contour stays closer to the circle than the
    voxel staircase does (whose corners stick out by up to ~0.7 voxel)."""
    coarse = _disc(12, radius, 6.0)
    grid = slices.display_grid(coarse.shape, (6.0, 6.0))
    factor = grid.factors[0]

    def deviation(shown):            # |distance from the centre - radius| of the contour pixels, in voxels
        rows, cols = np.nonzero(slices.boundaries(shown))
        return np.abs(np.hypot(rows + 0.5 - 6 * factor, cols + 0.5 - 6 * factor) / factor - radius)

    smooth = deviation(slices.resample_labels(coarse, grid))
    blocky = deviation(np.kron(coarse, np.ones(grid.factors, np.uint8)))
    assert smooth.max() < 0.85 * blocky.max() and smooth.mean() < blocky.mean()


def test_adjacent_labels_leave_no_background_gap_between_them():
    labels = np.zeros((6, 8), np.uint8)
    labels[:, :4], labels[:, 4:] = 1, 2                       # two organs touching along a column edge
    smooth = slices.resample_labels(labels, slices.display_grid(labels.shape, (6.0, 6.0)))
    assert set(np.unique(smooth)) == {1, 2}


def test_ct_is_interpolated_on_the_display_grid():
    hu = np.zeros((4, 4))
    hu[:, 2:] = 1000.0
    grid = slices.display_grid(hu.shape, (6.0, 6.0))
    shown = slices.resample(hu, grid, order=3)
    assert shown.shape == grid.shape
    row = shown[shown.shape[0] // 2]
    assert len(np.unique(np.round(row))) > 4                 # a ramp, not two blocks


# --- colour bar, windows, crosshair --------------------------------------------------------------

def test_window_presets_are_named_as_radiologists_name_them():
    assert slices.WINDOW_PRESETS == {"lung": (1500.0, -600.0), "mediastinum": (350.0, 40.0),
                                     "bone": (1800.0, 400.0), "abdomen": (400.0, 50.0)}
    assert slices.window_label("lung") == "lung · W1500 / L−600"
    assert slices.window(np.array([-135.0, 40.0, 215.0]), *slices.WINDOW_PRESETS["mediastinum"]).tolist() == \
        [0.0, 0.5, 1.0]


def test_attribution_units_name_what_the_values_are():
    assert "∂f̂/∂x" in slices.attribution_unit("vg")[0] and "2048 HU" in slices.attribution_unit("vg")[1]
    assert "mean of the class's logits" in slices.attribution_unit("smoothgrad", {"aggregation": "mean"})[1]
    assert "decoder.stages.4" in slices.attribution_unit("gradcam", {"layer": "decoder.stages.4"})[1]
    assert "negative control" in slices.attribution_unit("guided_backprop")[1]
    assert slices.attribution_unit("kernelshap")[0] == "Shapley value [logit]"
    assert slices.attribution_unit("kernelshap", {"value": "dice"})[0] == "Shapley value [dice score]"


def test_colour_scale_matches_the_overlay_and_hides_the_threshold_band():
    scale = slices.attribution_scale(np.array([-4.0, -1.0, 0.5, 1.0, 2.0, 4.0]), 50)
    assert scale.top == 4.0 and scale.threshold == pytest.approx(1.5)
    stops = slices.attribution_colorscale(scale, opacity=1.0)
    assert stops[0][1] == "rgb(43,131,186)" and stops[-1][1] == "rgb(215,25,28)"    # full blue / red
    assert stops[len(stops) // 2][1] == "rgb(128,128,128)"                           # hidden band: grey
    hidden = [s for s in stops if abs(2 * s[0] - 1) * 4.0 < 1.5]
    assert hidden and all(s[1] == "rgb(128,128,128)" for s in hidden)


def test_clicked_pixel_and_crosshair_name_the_same_voxel():
    volume = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    for view in slices.VIEWS:
        plane = slices.cut(volume, view, 2)
        for row, col in ((0, 0), (plane.shape[0] - 1, 1), (2, plane.shape[1] - 1)):
            voxel = slices.voxel_of_pixel(view, 2, row, col, volume.shape)
            assert volume[voxel] == plane[row, col]
            assert slices.pixel_of_voxel(view, voxel, volume.shape) == (row, col)
    planes = slices.ViewPlanes(slices.cut(volume, "coronal", 3), None, None, None, "")
    points = slices.hover_points("coronal", 3, planes, volume.shape, (2.0, 1.0))
    x, y, z, hu = points["customdata"][7][:4].astype(int)
    assert volume[x, y, z] == hu and y == 3


# --- the page ------------------------------------------------------------------------------------

def _open(monkeypatch, db, params):
    monkeypatch.setenv("AGG2EXP_DB", str(db))
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params.update(params)
    app.run()
    app.switch_page("app_pages/case_viewer.py").run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def _figures(app):
    return [go.Figure(json.loads(c.proto.spec)) for c in app.get("plotly_chart")]


def test_case_viewer_page_links_planes_and_colours_surfaces(monkeypatch, synthetic_store):
    case = synthetic_store["case_ids"][0]
    app = _open(monkeypatch, synthetic_store["path"], {"case": case, "target": "heart", "slice_coronal": "5",
                                                       "window": "abdomen", "3d": "1"})
    shown = _figures(app)
    titles = [f.layout.title.text for f in shown]
    slices_shown = [f for f in shown if f.layout.title.text.split()[0] in slices.VIEWS]
    assert len(slices_shown) == 3 and any(t.startswith("coronal y = 5 · heart") for t in titles)
    axial = next(f for f in slices_shown if f.layout.title.text.startswith("axial"))
    lines = [s for s in axial.layout.shapes if s.line.dash == "dot"]
    assert len(lines) == 2 and any(s.y0 == s.y1 == pytest.approx((24 - 1 - 5 + 0.5) * 1.5) for s in lines)
    assert any(isinstance(t, go.Scattergl) and t.customdata is not None for t in axial.data)   # clickable
    bars = [t.marker.colorbar.title.text for f in slices_shown for t in _colorbars(f)]
    assert bars and all("logit / scaled unit" in b and "hidden (P80)" in b for b in bars)
    assert "W400 / L50" in " ".join(str(c.value) for c in app.caption)
    meshes = [t for f in shown for t in f.data if isinstance(t, go.Mesh3d)]
    if meshes:      # VTK available: the surfaces carry the attribution of heart per vertex
        assert any(t.intensity is not None and len(t.intensity) == len(t.x) for t in meshes)
        assert next(t for t in meshes if t.name == "heart").opacity == 1.0
    else:
        assert any("No 3-D view" in str(i.value) for i in app.info)
