"""Partitions into interpretable units: ids, coverage, FCC geometry, hybrid refinement."""
import numpy as np
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.attribution.partitions import (cube_partition, fcc_partition, make_partition, nearest_d3, refine,
                                     relabel)


def _consecutive(p):
    ids = np.unique(p)
    return ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))


def _labels(shape=(20, 24, 16)):
    lab = np.zeros(shape, np.int64)
    lab[4:12, 5:15, 3:10] = 3
    lab[10:18, 12:22, 6:14] = 7
    return lab


@pytest.mark.parametrize("name", ["cubes", "semantic", "fcc", "hybrid"])
def test_ids_consecutive_and_cover_volume(name):
    lab = _labels()
    p = make_partition(name, lab.shape, spacing=(2.0, 1.0, 1.5), labels=lab, n_per_axis=3, scale_mm=8.0)
    assert p.shape == lab.shape and np.issubdtype(p.dtype, np.integer)
    assert (p >= 0).all() and _consecutive(p)


def test_cubes_regular_grid():
    p = cube_partition((8, 6, 4), (2, 3, 2))
    assert p.max() + 1 == 12
    assert np.bincount(p.ravel()).tolist() == [16] * 12  # 4x2x2 blocks
    assert (p[:4, :2, :2] == 0).all() and (p[4:, 4:, 2:] == 11).all()
    assert cube_partition((3, 3, 3), 10).max() + 1 == 27  # never more blocks than voxels


def test_semantic_one_unit_per_label_present():
    lab = _labels()
    p = make_partition("semantic", lab.shape, labels=lab)
    assert p.max() + 1 == 3
    for value in (0, 3, 7):  # each unit is exactly one label's voxels
        assert len(np.unique(p[lab == value])) == 1


def test_nearest_d3_is_nearest():
    rng = np.random.default_rng(0)
    u = rng.uniform(-5, 5, (2000, 3))
    got = nearest_d3(u)
    assert (got.sum(axis=1) % 2 == 0).all()
    # brute force over nearby D3 points
    base = np.floor(u).astype(int)
    offsets = np.array([[a, b, c] for a in (-1, 0, 1, 2) for b in (-1, 0, 1, 2) for c in (-1, 0, 1, 2)])
    cand = base[:, None, :] + offsets[None]
    cand_ok = cand.sum(axis=2) % 2 == 0
    d = np.where(cand_ok, ((cand - u[:, None]) ** 2).sum(axis=2), np.inf).min(axis=1)
    assert np.allclose(((got - u) ** 2).sum(axis=1), d)


def test_fcc_cells_equal_physical_volume_under_anisotropic_spacing():
    spacing, scale = (2.5, 0.8, 0.8), 16.0
    p = fcc_partition((40, 120, 120), spacing, scale)
    volume = np.bincount(p.ravel()) * np.prod(spacing)
    faces = [p[0], p[-1], p[:, 0], p[:, -1], p[:, :, 0], p[:, :, -1]]
    border = np.unique(np.concatenate([f.ravel() for f in faces]))
    inner = np.setdiff1d(np.arange(p.max() + 1), border)
    assert len(inner) > 50
    expected = scale ** 3 / np.sqrt(2)  # rhombic dodecahedron of the FCC lattice
    assert abs(np.median(volume[inner]) / expected - 1) < 0.05
    assert volume[inner].std() / volume[inner].mean() < 0.05
    # isotropic in mm although voxels are 3x longer along axis 0
    idx = np.argwhere(p == inner[len(inner) // 2]) * np.asarray(spacing)
    extent = idx.max(axis=0) - idx.min(axis=0)
    assert extent.max() / extent.min() < 1.3


def test_hybrid_refines_fcc_and_labels():
    lab = _labels()
    kw = dict(spacing=(1.0, 1.0, 1.0), scale_mm=6.0)
    h = make_partition("hybrid", lab.shape, labels=lab, **kw)
    f = make_partition("fcc", lab.shape, **kw)
    for u in range(h.max() + 1):  # every hybrid unit lies in one fcc cell and one label
        inside = h == u
        assert len(np.unique(f[inside])) == 1 and len(np.unique(lab[inside])) == 1
    pairs = {(a, b) for a, b in zip(f.ravel(), lab.ravel())}
    assert h.max() + 1 == len(pairs) > f.max() + 1


def test_exclude_labels_leaves_voxels_without_unit():
    lab = _labels()
    for name in ("semantic", "hybrid"):
        p = make_partition(name, lab.shape, labels=lab, scale_mm=6.0, exclude_labels=(0,))
        assert (p[lab == 0] == -1).all() and (p[lab > 0] >= 0).all()
        assert _consecutive(p[p >= 0])
    assert make_partition("semantic", lab.shape, labels=lab, exclude_labels=(0,)).max() + 1 == 2


def test_refine_and_relabel():
    a = np.array([[0, 0, 1], [1, 1, 1]])
    b = np.array([[5, 6, 6], [6, 6, 5]])
    r = refine(a, b)
    assert r.tolist() == [[0, 1, 2], [2, 2, 3]]
    ids, values = relabel(np.array([10, -1, 10, 4]))
    assert ids.tolist() == [2, 0, 2, 1] and values.tolist() == [-1, 4, 10]


def test_errors_are_one_line():
    with pytest.raises(InputError, match="needs a label map"):
        make_partition("semantic", (4, 4, 4))
    with pytest.raises(InputError, match="unknown partition"):
        make_partition("voronoi", (4, 4, 4))
