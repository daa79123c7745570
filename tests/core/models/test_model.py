"""Networks by config, self-describing checkpoints, clear errors on mismatch, Dice."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.errors import InputError
from agg2exp_core.models import PAPER_NETWORK, build_network, dice_per_class, load_checkpoint, save_checkpoint

SMALL_UNET = {"name": "unet", "params": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


def test_checkpoint_round_trip_predicts_identically(tmp_path):
    torch.manual_seed(0)
    net = build_network(SMALL_UNET, 3).eval()
    path = save_checkpoint(tmp_path / "m.pt", net, SMALL_UNET, ["bg", "a", "b"], Preprocessing(spacing=(2, 2, 2)),
                           roi_size=(16, 16, 16))
    model = load_checkpoint(path, "cpu")
    assert model.label_names == ["bg", "a", "b"] and model.preprocessing.spacing == (2.0, 2.0, 2.0)
    assert model.roi_size == (16, 16, 16) and len(model.checkpoint_sha256) == 64
    image = torch.rand(1, 16, 16, 16)
    with torch.no_grad():
        expected = net(image[None])[0]
    torch.testing.assert_close(model.predict(image), expected, atol=1e-5, rtol=1e-5)


def test_sliding_window_covers_volumes_larger_than_the_window(tmp_path):
    net = build_network(SMALL_UNET, 2).eval()
    path = save_checkpoint(tmp_path / "m.pt", net, SMALL_UNET, ["bg", "a"], Preprocessing(), roi_size=(8, 8, 8))
    logits = load_checkpoint(path, "cpu").predict(torch.rand(1, 20, 12, 9))
    assert logits.shape == (2, 20, 12, 9) and torch.isfinite(logits).all()


def test_plain_state_dict_needs_and_accepts_a_description(tmp_path):
    net = build_network(SMALL_UNET, 2)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(InputError, match="plain state dict"):
        load_checkpoint(tmp_path / "plain.pt", "cpu")
    model = load_checkpoint(tmp_path / "plain.pt", "cpu", network=SMALL_UNET, label_names=["bg", "x"], roi_size=(8, 8, 8))
    assert model.n_classes == 2


def test_mismatched_labels_or_config_are_clear_errors(tmp_path):
    net = build_network(SMALL_UNET, 3)
    path = save_checkpoint(tmp_path / "m.pt", net, SMALL_UNET, ["bg", "a", "b"], Preprocessing(), roi_size=(8, 8, 8))
    with pytest.raises(InputError, match="checkpoint has 3 labels, expected 17") as err:
        load_checkpoint(path, "cpu", label_names=[str(i) for i in range(17)])
    assert str(err.value).startswith(str(path))
    other = {"name": "unet", "params": {"channels": [8, 16], "strides": [2], "num_res_units": 0}}
    with pytest.raises(InputError, match="weights do not match network config"):
        load_checkpoint(path, "cpu", network=other)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_paper_network_is_constructible():
    net = build_network(PAPER_NETWORK, 17)
    assert sum(p.numel() for p in net.parameters()) > 50e6  # SwinUNETR(feature_size=48) ~ 62M
    with pytest.raises(ValueError, match="unknown network"):
        build_network({"name": "vnet9000"}, 2)


def test_dice_known_answer_and_absent_class():
    label = torch.tensor([0, 1, 1, 1, 2, 2]).reshape(6, 1, 1)
    pred = torch.tensor([0, 1, 1, 0, 2, 0]).reshape(6, 1, 1)
    dice = dice_per_class(pred, label, 4)
    np.testing.assert_allclose(dice[:3], [2 * 1 / (1 + 3), 2 * 2 / (2 + 3), 2 * 1 / (1 + 2)])
    assert np.isnan(dice[3])  # class 3 absent from the truth
