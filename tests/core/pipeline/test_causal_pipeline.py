"""A causal run through precompute into the store (donors from the cohort, components, relevance
masks), and the dashboard pages that show its signed effects with their standard errors."""
from __future__ import annotations

import base64

from pathlib import Path

import duckdb
import numpy as np
import plotly.io as pio
import pytest
import torch
from streamlit.testing.v1 import AppTest

from agg2exp_core.attribution.causal import causal_run
from agg2exp_core.errors import InputError
from agg2exp_core.io.images import Case, load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.io.phantoms import generate_cohort
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.labels import THORAX_LABELS
from agg2exp_core.models import build_network, load_checkpoint, save_checkpoint
from agg2exp_core.attribution.causal import unit_values
from agg2exp_core.attribution.partitions import semantic_partition
from agg2exp_core.pipeline.causal_stage import CohortDonors, ExtrasSpec, explain_case, fit_to_grid
from agg2exp_core.pipeline.precompute import precompute

ROOT = Path(__file__).resolve().parents[3]
TINY_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
PARAMS = {"partition": "semantic", "donor": "images", "n_samples": 2, "relevance_share": 0.8, "components": "blocks"}
CLASSES = [0, 2, 8]
CASES = ["ref-000", "ext-000"]
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def causal_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    manifest = generate_cohort(root / "cohort", n_reference=2, n_test=1, n_external=1, shape=(32, 24, 24),
                               spacing=(12.0, 12.0, 12.0), seed=1)
    torch.manual_seed(0)
    net = build_network(TINY_UNET, len(THORAX_LABELS))
    checkpoint = save_checkpoint(root / "tiny.pt", net, TINY_UNET, THORAX_LABELS, Preprocessing(spacing=None),
                                 roi_size=(32, 24, 24))
    db = root / "store.duckdb"
    summary = precompute(manifest, checkpoint, db, "causal", PARAMS, classes=CLASSES, progress=False, case_ids=CASES)
    return {"root": root, "manifest": manifest, "checkpoint": checkpoint, "db": db, "summary": summary}


def frame(db, sql, params=()):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, list(params)).df()


def test_causal_run_lands_in_the_store(causal_store):
    summary, db = causal_store["summary"], causal_store["db"]
    assert sorted(summary.done) == sorted(CASES) and not summary.failed
    effects = frame(db, "SELECT e.*, r.name AS source, t.name AS target FROM causal_effect e "
                        "JOIN rois r ON r.roi_id = e.source_id JOIN rois t ON t.roi_id = e.target_id")
    assert set(effects.case_id) == set(CASES) and set(effects.run_id) == {summary.run_id}
    assert set(effects.target) == {THORAX_LABELS[c] for c in CLASSES}
    assert set(effects.source) <= set(THORAX_LABELS) and len(set(effects.source)) > 3   # one per predicted class
    assert (effects.n == 2).all() and effects.se.notna().all() and (effects.se >= 0).all()
    assert np.isfinite(effects.ate).all() and (effects.ate != 0).any()
    # the voxel map goes through the usual matrices too, and the artefact holds the relevance masks
    assert frame(db, "SELECT count(*) AS k FROM local_importance WHERE run_id = ?", [summary.run_id]).k[0] > 0
    masks = frame(db, "SELECT * FROM relevance_mask WHERE run_id = ?", [summary.run_id])
    assert len(masks) == len(CASES) * len(CLASSES) and (masks.share == 0.8).all()
    assert masks.dice_keep.between(0, 1).all() and masks.dice_remove.between(0, 1).all()
    path = frame(db, "SELECT path FROM artifacts WHERE case_id = ?", [CASES[0]]).path[0]
    with np.load(db.parent / path) as arrays:
        row = masks[(masks.case_id == CASES[0])].iloc[0]
        channel = THORAX_LABELS.index(frame(db, "SELECT name FROM rois WHERE roi_id = ?", [int(row.target_id)]).name[0])
        assert arrays[f"relevance_{channel}"].dtype == np.uint8
        assert int(arrays[f"relevance_{channel}"].sum()) == int(row.n_voxels) > 0
    components = frame(db, "SELECT * FROM component_effect WHERE run_id = ? ORDER BY position", [summary.run_id])
    assert components.component.iloc[0] == "model.0" and (components.n == 2).all()


def test_stored_effects_equal_a_direct_computation_with_the_same_donors(causal_store):
    model = load_checkpoint(causal_store["checkpoint"], "cpu")
    rows = read_manifest(causal_store["manifest"]).to_dict("records")
    row = next(r for r in rows if r["case_id"] == CASES[1])
    case = load_case(row, model.preprocessing, n_labels=model.n_classes)
    donors = CohortDonors(rows, model.preprocessing, 2, seed=0).for_case(case)
    pred = model.predict(case.image).argmax(0)
    result = causal_run(model, case.image, CLASSES, partition="semantic", donor="images", donors=donors,
                        n_samples=2, mask=pred)
    stored = frame(causal_store["db"], "SELECT e.ate, e.se, t.name AS target, s.name AS source FROM causal_effect e "
                   "JOIN rois t ON t.roi_id = e.target_id JOIN rois s ON s.roi_id = e.source_id WHERE case_id = ?",
                   [CASES[1]])
    present = np.unique(pred.numpy())  # semantic regions: one per predicted label, in label order
    for _, r in stored.iterrows():
        i, j = CLASSES.index(THORAX_LABELS.index(r.target)), int(np.flatnonzero(present == THORAX_LABELS.index(r.source))[0])
        assert np.isclose(r.ate, result.ate[i, j], rtol=1e-6, atol=1e-9) and np.isclose(r.se, result.se[i, j], rtol=1e-6)


def test_relevance_mask_of_a_kernelshap_map_holds_the_share_of_its_positive_values(causal_store):
    model = load_checkpoint(causal_store["checkpoint"], "cpu")
    row = read_manifest(causal_store["manifest"]).to_dict("records")[0]
    case = load_case(row, model.preprocessing, n_labels=model.n_classes)
    pred = model.predict(case.image).argmax(0)
    attributions, extras = explain_case(model, case, pred, "kernelshap", {"partition": "semantic", "n_coalitions": 16},
                                        [8], ExtrasSpec(relevance_share=0.8))
    mask, n_units, keep, remove = extras.relevance[8]
    part = semantic_partition(pred.numpy())
    values = unit_values(attributions[0], part)
    positive = np.clip(values, 0, None)
    chosen = np.unique(part[mask])   # whole units, the largest values, the fewest reaching 80 %
    top = np.sort(positive)[::-1]
    assert len(chosen) == n_units and np.all(mask == np.isin(part, chosen))
    assert values[chosen].sum() == pytest.approx(top[:n_units].sum())
    assert top[:n_units].sum() >= 0.8 * positive.sum() > top[:n_units - 1].sum()
    assert 0 <= remove <= 1 and 0 <= keep <= 1 and extras.effects is None
    assert set(extras.artifact()) == {"relevance_8"}


def test_donors_of_another_grid_are_resampled_and_centred():
    image = torch.zeros(1, 10, 8, 6)
    case = Case("a", image, np.diag([2.0, 2.0, 2.0, 1.0]))
    donor_image = torch.zeros(1, 6, 6, 6)
    donor_image[0, 2:4, 2:4, 2:4] = 1.0          # a bright cube in the centre, 4 mm voxels
    donor = Case("b", donor_image, np.diag([4.0, 4.0, 4.0, 1.0]))
    fitted = fit_to_grid(donor, case)
    assert tuple(fitted.shape) == (1, 10, 8, 6) and type(fitted) is torch.Tensor
    bright = np.argwhere(fitted[0].numpy() > 0.5)
    assert np.allclose(bright.mean(axis=0), (np.array([10, 8, 6]) - 1) / 2, atol=1.0)   # still centred


def test_bad_causal_parameters_fail_before_anything_is_written(causal_store, tmp_path):
    db = tmp_path / "s.duckdb"
    with pytest.raises(InputError, match="relevance_share needs a supervoxel method"):
        precompute(causal_store["manifest"], causal_store["checkpoint"], db, "vg", {"relevance_share": 0.8},
                   progress=False)
    with pytest.raises(InputError, match="donors come from the cohort"):
        precompute(causal_store["manifest"], causal_store["checkpoint"], db, "causal", {"donors": [[0.0]]},
                   progress=False)
    with pytest.raises(InputError, match="unknown parameter 'n_coalitions'"):
        precompute(causal_store["manifest"], causal_store["checkpoint"], db, "causal", {"n_coalitions": 3},
                   progress=False)
    assert not db.exists()


# ---------------------------------------------------------------- pages
def open_page(monkeypatch, db, page: str, params: dict | None = None) -> AppTest:
    monkeypatch.setenv("STREAMLIT_CLIENT_SHOW_ERROR_DETAILS", "full")
    monkeypatch.setenv("AGG2EXP_DB", str(db))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    app.query_params.update(params or {})
    app.run()
    app.switch_page(f"app_pages/{page}.py").run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def signed_figures(app: AppTest) -> list:
    """The page's figures on the signed scale: zero-centred heat maps and ATE box plots."""
    out = []
    for chart in app.get("plotly_chart"):
        fig = pio.from_json(chart.proto.spec)
        if any(t.type == "heatmap" and t.zmid == 0 for t in fig.data) or \
                any(t.type == "box" for t in fig.data) and "ATE" in (fig.layout.yaxis.title.text or ""):
            out.append(fig)
    return out


def array(value) -> np.ndarray:
    """A figure's numbers as floats (Plotly's JSON packs arrays as base64 typed arrays)."""
    if isinstance(value, dict) and "bdata" in value:
        shape = [int(k) for k in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).reshape(shape)
    return np.array(value, dtype=float)


def title(fig) -> str:
    return fig.layout.title.text or ""


def test_heat_map_shows_the_signed_cohort_mean_with_its_se(monkeypatch, causal_store):
    app = open_page(monkeypatch, causal_store["db"], "heat_map")
    heat = signed_figures(app)[0].data[0]
    z = array(heat.z)
    bound = np.nanmax(np.abs(z))
    assert heat.zmid == 0 and heat.zmin == -heat.zmax and np.isclose(heat.zmax, bound)
    expected = frame(causal_store["db"], "SELECT avg(ate) AS m FROM causal_effect GROUP BY target_id, source_id")
    assert np.isclose(np.nansum(z), expected.m.sum())
    for row, cells in zip(z, heat.customdata):   # hover: the signed value and its SE
        for value, cell in zip(row, cells):
            if np.isfinite(value):
                assert cell[2] == ("+" if value > 0 else "−") + f"{abs(value):.4g}" and cell[3] != "n/a"
    assert "SE of the mean" in heat.hovertemplate
    assert any("Causal effects (signed ATE)" in str(s.value) for s in app.subheader)


def test_class_distributions_show_each_case_effect_with_its_se(monkeypatch, causal_store):
    app = open_page(monkeypatch, causal_store["db"], "class_distributions", {"target": "heart"})
    boxes = [t for fig in signed_figures(app) for t in fig.data if t.type == "box"]
    heart = frame(causal_store["db"], "SELECT e.ate, e.se FROM causal_effect e JOIN rois t ON t.roi_id = e.target_id "
                  "WHERE t.name = 'heart'")
    shown = np.concatenate([array(b.y) for b in boxes])
    assert np.allclose(np.sort(shown), np.sort(heart.ate.to_numpy()))
    assert "SE" in boxes[0].hovertemplate and all(float(c[1]) >= 0 for b in boxes for c in b.customdata)


def test_case_viewer_shows_the_case_effects_components_and_relevance_mask(monkeypatch, causal_store):
    app = open_page(monkeypatch, causal_store["db"], "case_viewer", {"case": CASES[0], "target": "heart"})
    figs = signed_figures(app)
    assert any("ablating each network component" in title(f) for f in figs)
    local = next(f for f in figs if title(f).startswith(f"Case {CASES[0]}: ATE")).data[0]
    stored = frame(causal_store["db"], "SELECT ate FROM causal_effect WHERE case_id = ?", [CASES[0]])
    assert np.isclose(np.nansum(array(local.z)), stored.ate.sum())
    assert "SE (Monte-Carlo)" in local.hovertemplate
    markdown = " ".join(str(m.value) for m in app.markdown)
    assert "Relevance mask of heart" in markdown and "Dice keeping only the mask" in markdown


def test_methods_page_lists_the_blocks_each_class_depends_on(monkeypatch, causal_store):
    app = open_page(monkeypatch, causal_store["db"], "methods")
    heat = next(f for f in signed_figures(app) if "network component" in title(f)).data[0]
    stored = frame(causal_store["db"], "SELECT component FROM component_effect ORDER BY position")
    assert list(heat.x) == list(range(stored.component.nunique())) and np.isfinite(array(heat.z)).all()
