"""Cascading model-parameter randomisation: layer order, nesting, the trained model untouched, every
model source (MONAI UNet, bundle, nnU-Net with its unused deep-supervision heads)."""
from __future__ import annotations

import copy

import pytest
import torch

from agg2exp_core.analysis.sanity import SanityConfig, run_sanity_checks
from agg2exp_core.analysis.sanity.randomisation import Cascade, cascade_depths, cascade_layers, layer_key
from agg2exp_core.errors import InputError
from agg2exp_core.models.sources import load_model
from tests.support import model_folders as mf


def _changed(before: torch.nn.Module, after: torch.nn.Module, modules) -> list[bool]:
    """Per module name: whether any of its parameters or buffers differ between the two networks."""
    a, b = dict(before.named_modules()), dict(after.named_modules())
    out = []
    for name in modules:
        old = list(a[name].state_dict().values())
        new = list(b[name].state_dict().values())
        out.append(any(not torch.equal(x, y) for x, y in zip(old, new)))
    return out


def test_unet_cascades_from_the_output_layer_and_changes_layers_one_by_one():
    net = mf.tiny_unet(3)
    trained = copy.deepcopy(net.state_dict())
    cascade = Cascade.of(net, torch.zeros(1, 1, 16, 16, 16), seed=1)
    names = [layer.name for layer in cascade.layers]
    assert names[0] == "model.2.conv" and names[-1] == "model.0.conv"  # output first, input last
    for depth in range(cascade.n_layers + 1):
        randomised = cascade.randomised(depth)
        for position, layer in enumerate(cascade.layers):
            changed = _changed(net, randomised, layer.modules)
            # PReLU's initialiser is its constant 0.25, the value an untrained PReLU still holds
            if "adn.A" in layer.name:
                continue
            assert all(changed) == (position < depth), (depth, layer.name)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in trained.items())  # the trained model untouched


def test_cascade_is_nested_and_reproducible():
    net = mf.tiny_unet(3)
    example = torch.zeros(1, 1, 16, 16, 16)
    first = Cascade.of(net, example, seed=3)
    output_layer = first.layers[0].modules[0]
    at_one = copy.deepcopy(first.randomised(1).state_dict())
    at_all = first.randomised(first.n_layers).state_dict()
    key = f"{output_layer}.weight"
    assert torch.equal(at_one[key], at_all[key])  # the output layer's draw is the same at every depth
    again = Cascade.of(net, example, seed=3).randomised(1).state_dict()
    assert torch.equal(again[key], at_one[key])
    other = Cascade.of(net, example, seed=4).randomised(1).state_dict()
    assert not torch.equal(other[key], at_one[key])
    assert torch.equal(first.randomised(0).state_dict()[key], net.state_dict()[key])  # back to a fresh copy


def test_normalisation_layers_are_steps_or_kept():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.BatchNorm3d(4),
                              torch.nn.Conv3d(4, 2, 1)).eval()
    with torch.no_grad():
        net[1].running_mean.fill_(3.0)
        net[1].weight.fill_(2.0)
    example = torch.zeros(1, 1, 6, 6, 6)
    reset = cascade_layers(net, example)
    assert [(layer.name, layer.kind) for layer in reset] == [("2", "layer"), ("1", "normalisation"), ("0", "layer")]
    randomised = Cascade(net, reset).randomised(2)
    assert float(randomised[1].running_mean.abs().max()) == 0.0 and float(randomised[1].weight.detach().min()) == 1.0
    kept = cascade_layers(net, example, normalisation="keep")
    assert [layer.name for layer in kept] == ["2", "0"]
    assert torch.equal(Cascade(net, kept).randomised(2)[1].running_mean, net[1].running_mean)
    with pytest.raises(InputError, match="normalisation"):
        cascade_layers(net, example, normalisation="drop")


def test_unused_heads_join_the_first_step():
    class WithHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Conv3d(1, 2, 1)
            self.aux_head = torch.nn.Conv3d(2, 2, 1)  # a deep-supervision head the forward pass skips

        def forward(self, x):
            return self.body(x)

    net = WithHead()
    layers = cascade_layers(net, torch.zeros(1, 1, 4, 4, 4))
    assert [layer.name for layer in layers] == ["body"] and layers[0].unused == ("aux_head",)
    randomised = Cascade(net, layers).randomised(1)
    assert not torch.equal(randomised.aux_head.weight, net.aux_head.weight)


def test_fold_ensembles_randomise_a_layer_in_every_fold_at_once():
    assert layer_key("folds.1.encoder.stages.0.conv") == "encoder.stages.0.conv"
    assert layer_key("network.folds.0.decoder") == "network.decoder"
    assert layer_key("conv") == "conv"


def test_cascade_depths():
    assert cascade_depths(20, 3) == [1, 7, 14, 20]
    assert cascade_depths(20, 0) == [20]
    assert cascade_depths(2, 5) == [1, 2]
    with pytest.raises(InputError, match="steps"):
        cascade_depths(5, -1)


def test_bundle_and_torchscript(tmp_path):
    bundle = load_model(mf.write_bundle(tmp_path / "bundle"), device="cpu")
    cascade = Cascade.of(bundle.network, torch.zeros(1, 1, *bundle.roi_size))
    assert cascade.n_layers >= 3
    randomised = cascade.randomised(cascade.n_layers)
    assert all(_changed(bundle.network, randomised, [m for layer in cascade.layers for m in layer.modules
                                                     if "adn.A" not in m]))
    scripted = torch.jit.script(mf.tiny_unet(3))
    with pytest.raises(InputError, match="TorchScript"):
        cascade_layers(scripted, torch.zeros(1, 1, 8, 8, 8))


def test_nnunet_folds_and_deep_supervision_heads(tmp_path):
    model = load_model(mf.write_nnunet(tmp_path / "Dataset997", folds=(0, 1)), device="cpu")
    cascade = Cascade.of(model.network, torch.zeros(1, 1, *model.roi_size))
    first = cascade.layers[0]
    assert len(first.modules) == 2 and all(m.startswith("folds.") for m in first.modules)  # one layer, two folds
    assert first.unused and all("seg_layers" in m for m in first.unused)  # deep-supervision heads, recorded
    randomised = cascade.randomised(1)
    assert all(_changed(model.network, randomised, first.modules + first.unused))
    untouched = [m for layer in cascade.layers[1:] for m in layer.modules]
    assert not any(_changed(model.network, randomised, untouched))
    # the checks run through the Segmenter's own (nnU-Net) window on a copy with the randomised network
    trained = copy.deepcopy(model.network.state_dict())
    frame = run_sanity_checks(model, torch.rand(1, *model.roi_size), [1, 2], "vg", {}, SanityConfig(steps=0))
    assert sorted(frame[frame.check == "mprt"].step.unique()) == [0, cascade.n_layers]
    assert frame.value.notna().all()
    assert all(torch.equal(v, model.network.state_dict()[k]) for k, v in trained.items())
