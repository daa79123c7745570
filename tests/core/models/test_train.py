"""Training writes a self-describing checkpoint, deterministically for a seed."""
from __future__ import annotations

import pytest
import torch

from agg2exp_core.errors import InputError
from agg2exp_core.models import load_checkpoint
from agg2exp_core.io.phantoms import generate_cohort
from agg2exp_core.models.train import TrainConfig, train

TINY = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("c"), n_reference=3, n_test=1, n_external=1,
                           shape=(32, 24, 24), spacing=(12.0, 12.0, 12.0), seed=2)


def test_training_is_deterministic_and_self_describing(manifest, tmp_path):
    config = TrainConfig(network=TINY, crop_size=(16, 16, 16), roi_size=(32, 24, 24), iterations=4, seed=3)
    a = train(manifest, tmp_path / "a.pt", config, device="cpu", progress=False)
    b = train(manifest, tmp_path / "b.pt", config, device="cpu", progress=False)
    first, second = load_checkpoint(a, "cpu"), load_checkpoint(b, "cpu")
    for (name, p), q in zip(first.network.state_dict().items(), second.network.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert first.n_classes == 17 and first.roi_size == (32, 24, 24)
    blob = torch.load(a, weights_only=True)
    assert blob["extra"]["iterations"] == 4 and blob["extra"]["n_train_cases"] == 2


def test_training_needs_labelled_train_cases(manifest, tmp_path):
    with pytest.raises(InputError, match="no labelled cases with split 'val'"):
        train(manifest, tmp_path / "x.pt", TrainConfig(network=TINY, split="val", iterations=1), progress=False)
