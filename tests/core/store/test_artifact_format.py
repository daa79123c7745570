"""The slice-artefact format, defined once in ``store.artifacts`` (issues #21, #24): what the
pipeline writes the reader accepts; a file cut short or shaped otherwise is one line naming
it; the file and its folder are fsynced before the rename (so before the store row)."""
from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import numpy as np
import pytest

from agg2exp_core.pipeline.artifacts import slice_artifact
from agg2exp_core.store import artifacts
from agg2exp_core.store.artifacts import ArtifactUnreadable, read_artifact, write_artifact

SHAPE = (12, 10, 8)


def pipeline_arrays() -> dict:
    pred = np.zeros(SHAPE, np.uint8)
    pred[3:9, 2:8, 2:6] = 1
    hu = np.full(SHAPE, -800.0, np.float32)
    case = SimpleNamespace(hu=lambda: hu, spacing=(2.0, 2.0, 3.0), affine=np.diag([2.0, 2.0, 3.0, 1.0]),
                           label=None, rois={"nodule": pred == 1})
    attributions = np.random.default_rng(0).normal(size=(2,) + SHAPE).astype(np.float32)
    return slice_artifact(case, pred, attributions, [0, 1])


def test_what_the_pipeline_writes_the_reader_accepts_with_the_formats_keys(tmp_path):
    path = tmp_path / "c.npz"
    write_artifact(pipeline_arrays(), path)
    arrays = read_artifact(path)
    assert artifacts.explained_channels(arrays) == [0, 1] and artifacts.extra_rois(arrays) == ["nodule"]
    assert {artifacts.index_key(1), artifacts.volume_key(1), *(artifacts.plane_key(1, a) for a in artifacts.AXES)} \
        <= set(arrays)
    assert arrays[artifacts.plane_key(1, "y")].shape == (12, 8)


def test_the_file_and_its_folder_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd)), real_fsync(fd))[1])
    order = []
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(len(synced)), real_replace(a, b))[1])
    path = tmp_path / "c.npz"
    write_artifact(pipeline_arrays(), path)
    final = os.stat(path)
    files = [s for s in synced if stat.S_ISREG(s.st_mode)]
    folders = [s for s in synced if stat.S_ISDIR(s.st_mode)]
    assert any(os.path.samestat(s, final) for s in files) and order == [len(files)], "file synced, then renamed"
    assert any(os.path.samestat(s, os.stat(tmp_path)) for s in folders), "the rename made durable"


@pytest.mark.parametrize("damage, reason", [
    (lambda p, b: p.write_bytes(b""), "artefact unreadable"),
    (lambda p, b: p.write_bytes(b[: len(b) // 3]), "artefact unreadable"),
    (lambda p, b: p.write_bytes(b"\x93NUMPY not an archive"), "artefact unreadable"),
    (lambda p, b: np.savez(p, pred=np.zeros(SHAPE)), "no 3-D 'ct' array"),
    (lambda p, b: np.savez(p, ct=np.zeros(SHAPE), pred=np.zeros((3, 3, 3))), "'pred' has shape"),
    (lambda p, b: np.savez(p, ct=np.zeros(SHAPE), index_1=np.array([99, 0, 0])), "'index_1' is not a voxel"),
    (lambda p, b: np.savez(p, ct=np.zeros(SHAPE), index_1=np.array([1, 1, 1]), attr_1_z=np.zeros((3, 3))),
     "'attr_1_z' has shape"),
])
def test_a_damaged_or_foreign_artefact_is_one_line_naming_it(tmp_path, damage, reason):
    good = tmp_path / "good.npz"
    write_artifact(pipeline_arrays(), good)
    path = tmp_path / "c.npz"
    damage(path, good.read_bytes())
    with pytest.raises(ArtifactUnreadable) as err:
        read_artifact(path)
    assert str(err.value).startswith(str(path)) and reason in str(err.value) and "\n" not in str(err.value)
