"""Known answers of the model's own uncertainty features (models/uncertainty.py) on toy voxel-wise models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agg2exp_core.errors import InputError
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models import Segmenter
from agg2exp_core.models import uncertainty as u

SHAPE = (12, 10, 8)


class Bands(torch.nn.Module):
    """Voxel-wise: class c's logit is -((x - centre_c) / width_c)^2 - offset_c (a narrow width = a fragile class)."""

    def __init__(self, centres, widths, offsets=None):
        super().__init__()
        for name, values in (("centres", centres), ("widths", widths), ("offsets", offsets or [0.0] * len(centres))):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1, 1))

    def forward(self, x):
        return -((x - self.centres) / self.widths) ** 2 - self.offsets


class LeftHalf(torch.nn.Module):
    """Position-dependent, like a model that tells left from right: class 1 in the lower half of axis 0."""

    def forward(self, x):
        side = torch.zeros_like(x)
        side[:, :, :x.shape[2] // 2] = 1.0
        return torch.cat([-1000.0 * side, 1000.0 * side - 1000.0 * (1 - side)], 1)


def segmenter(network, n_classes, config=None) -> Segmenter:
    return Segmenter(network.eval(), config or {}, [f"c{i}" for i in range(n_classes)], Preprocessing(spacing=None),
                     None)


def three_bands() -> torch.Tensor:
    """An image [1,*S] of three slabs along axis 0 with values 0, 0.5, 1 (constant near every border)."""
    image = torch.zeros((1, *SHAPE))
    image[:, 4:8] = 0.5
    image[:, 8:] = 1.0
    return image


def features_of(model: Segmenter, image: torch.Tensor, spec=None, spacing=(1.0, 1.0, 1.0)):
    return u.uncertainty_features(model, image, model.predict(image), spacing, spec)


def test_a_model_invariant_to_the_perturbations_agrees_perfectly_and_is_sure():
    model = segmenter(Bands([0.0, 0.5, 1.0], [0.001] * 3), 3)  # steep: one-hot softmax, no band is crossed
    features = features_of(model, three_bands(), u.TTASpec(noise=(0.005,)))
    for name in (u.AGREEMENT, u.AGREEMENT_CLEAN, u.MARGIN_MASK, u.MARGIN_BOUNDARY):
        np.testing.assert_allclose(features[name], 1.0, err_msg=name)
    for name in (u.ENTROPY_MASK, u.ENTROPY_BOUNDARY, u.VOLUME_CV):
        np.testing.assert_allclose(features[name], 0.0, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(features[u.COMPONENTS], [1, 1, 1])
    assert u.FOLD_AGREEMENT not in features  # one network: no ensemble
    assert set(features) == set(u.FEATURES) - {u.FOLD_AGREEMENT}


def test_a_perturbation_that_breaks_one_class_lowers_its_agreement_and_not_the_others():
    # class 1 holds only |x - 0.5| < ~0.007; beyond, class 3 (a broad sink, never the clean answer) takes over
    model = segmenter(Bands([0.0, 0.5, 1.0, 0.5], [0.3, 0.01, 0.3, 0.2], [0.0, 0.0, 0.0, 0.5]), 4)
    image = three_bands()
    geometric = features_of(model, image, u.TTASpec(scales=(), shifts=(), noise=()))
    np.testing.assert_allclose(geometric[u.AGREEMENT][:3], 1.0)  # translations alone break nothing
    assert np.isnan(geometric[u.AGREEMENT][3])  # the sink is predicted by no member: undefined
    broken = features_of(model, image)  # +-2 % brightness moves class 1 out of its band
    assert broken[u.AGREEMENT][1] < 0.8 and broken[u.AGREEMENT_CLEAN][1] < 0.8
    np.testing.assert_allclose(broken[u.AGREEMENT][[0, 2]], 1.0)
    assert broken[u.ENTROPY_MASK][1] > 0.2 > max(broken[u.ENTROPY_MASK][[0, 2]])
    assert broken[u.MARGIN_MASK][1] < 0.5 < min(broken[u.MARGIN_MASK][[0, 2]])
    assert broken[u.VOLUME_CV][1] > 0.3 > max(broken[u.VOLUME_CV][[0, 2]])


def test_no_flips_for_a_model_that_declares_no_mirroring_axes():
    image = torch.rand((1, *SHAPE))
    plain = segmenter(LeftHalf(), 2)
    assert u.allowed_mirror_axes(plain) == ()
    assert [a.kind for a in u.TTASpec().augmentations(u.allowed_mirror_axes(plain))].count("flip") == 0
    no_moves = u.TTASpec(translations=())  # a position-bound model is no more translation- than flip-invariant
    np.testing.assert_allclose(features_of(plain, image, no_moves)[u.AGREEMENT], 1.0)
    # the same position-dependent model, declared flippable along axis 0, disagrees with itself: the
    # reason flips are taken only where the model allows them
    flippable = segmenter(LeftHalf(), 2, {"allowed_mirror_axes": [0]})
    assert [a.value for a in u.TTASpec().augmentations(u.allowed_mirror_axes(flippable)) if a.kind == "flip"] == [0]
    assert features_of(flippable, image, no_moves)[u.AGREEMENT].max() < 0.8


def test_flips_and_translations_map_the_prediction_back_exactly():
    volume = torch.rand((3, *SHAPE))
    for augmentation in (u.Augmentation("flip", 1), u.Augmentation("translate", (1, -2, 1))):
        moved = augmentation.apply(volume, (0.0, 1.0), 0)
        assert not torch.equal(moved, volume)
        back = augmentation.invert(moved)
        inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))  # translations repeat the border
        torch.testing.assert_close(back[inner], volume[inner], rtol=0, atol=0)


def test_components_volume_and_largest_share_of_a_known_mask():
    labels = np.zeros((10, 10, 10), np.int64)
    labels[0:2, 0:2, 0:2] = 1          # 8 voxels
    labels[2:3, 2:3, 2:3] = 1          # touches the first cube at a corner only: one 26-connected component
    labels[6:9, 6:9, 6:9] = 1          # 27 voxels, apart
    labels[5, 0, 0] = 2
    features = u.shape_features(labels, 4, spacing=(2.0, 2.0, 3.0))  # 12 mm^3 per voxel
    np.testing.assert_array_equal(features[u.COMPONENTS], [1, 2, 1, 0])
    np.testing.assert_allclose(features[u.VOLUME_ML], np.array([1000 - 37, 36, 1, 0]) * 0.012)
    np.testing.assert_allclose(features[u.LARGEST_SHARE][:3], [1.0, 27 / 36, 1.0])
    assert np.isnan(features[u.LARGEST_SHARE][3])


def test_pairwise_dice_known_answer_and_absent_classes():
    a = np.array([0, 1, 1, 1, 2, 2])
    b = np.array([0, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(u.pair_dice(a, b, 4)[:3], [1.0, 0.8, 0.8])
    assert np.isnan(u.pair_dice(a, b, 4)[3])  # absent from both: undefined, not perfect
    np.testing.assert_allclose(u.mean_pairwise_dice([a, b, b], 3), [1.0, (0.8 + 0.8 + 1.0) / 3, (0.8 + 0.8 + 1) / 3])


def test_boundary_is_each_masks_inner_and_outer_edge():
    labels = np.zeros((7, 7, 7), np.int64)
    labels[2:5, 2:5, 2:5] = 1
    edge = u.boundary_voxels(labels)
    assert not edge[3, 3, 3] and edge[2, 3, 3] and edge[1, 3, 3] and not edge[0, 3, 3]
    assert edge[labels == 1].sum() == 27 - 1  # every voxel of the 3^3 cube but its centre


def test_bad_input_is_one_clear_error():
    model = segmenter(Bands([0.0, 1.0], [0.3, 0.3]), 2)
    image = torch.zeros((1, *SHAPE))
    with pytest.raises(InputError, match=r"expected clean logits \[2, 12, 10, 8\]"):
        u.uncertainty_features(model, image, torch.zeros((3, *SHAPE)), (1, 1, 1))
    with pytest.raises(InputError, match="unknown kind"):
        u.Augmentation("rotate", 1.0).apply(image, (0.0, 1.0), 0)


def test_a_bundle_declares_its_mirroring_axes_in_its_metadata(tmp_path):
    from agg2exp_core.models import load_model
    from tests.support.model_folders import write_bundle

    folder = write_bundle(tmp_path / "bundle")
    assert u.allowed_mirror_axes(load_model(folder, device="cpu")) == ()
    meta_file = folder / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "mirror_axes": [2, 0]}))
    assert u.allowed_mirror_axes(load_model(folder, device="cpu")) == (0, 2)
    meta_file.write_text(json.dumps({**meta, "mirror_axes": [5]}))
    with pytest.raises(InputError, match="metadata.json.*mirror_axes"):
        load_model(folder, device="cpu")


@pytest.fixture(scope="module")
def nnunet_case(tmp_path_factory):
    """Two untrained nnU-Net folds that allow mirroring on axes 0 and 2, one without mirroring, and a scan."""
    from tests.support import model_folders as mf

    pytest.importorskip("nnunetv2")
    root = tmp_path_factory.mktemp("nnunet_uncertainty")
    image, seg = mf.write_scan(root / "scan")
    two = mf.write_nnunet(root / "two_folds", folds=(0, 1), mirror_axes=(0, 2))
    unmirrored = mf.write_nnunet(root / "no_mirroring", folds=(0,), mirror_axes=())
    return two, unmirrored, {"case_id": "a", "image": str(image), "label": str(seg)}


def test_an_nnunet_folder_with_two_folds_gives_ensemble_features(nnunet_case):
    from agg2exp_core.io.images import load_case
    from agg2exp_core.models import load_model

    torch.set_num_threads(1)
    folder, _, row = nnunet_case
    model = load_model(folder, device="cpu")
    case = load_case(row, model.preprocessing, n_labels=model.n_classes)
    clean = model.predict(case.image)
    folds = u.fold_networks(model)
    assert len(folds) == 2  # each fold alone; their mean is the clean (ensemble) prediction
    from agg2exp_core.models.inference import predict_logits

    mean = sum(predict_logits(f, case.image, model.window) for f in folds) / 2
    torch.testing.assert_close(mean, clean, rtol=1e-4, atol=1e-4)
    features = u.uncertainty_features(model, case.image, clean, case.spacing)
    assert u.FOLD_AGREEMENT in features and np.isfinite(features[u.FOLD_AGREEMENT][0])
    assert np.all((features[u.FOLD_AGREEMENT][np.isfinite(features[u.FOLD_AGREEMENT])] <= 1))
    single = load_model(folder, device="cpu", fold=0)
    assert u.fold_networks(single) == []
    assert u.FOLD_AGREEMENT not in u.uncertainty_features(single, case.image, single.predict(case.image),
                                                          case.spacing, u.TTASpec(scales=(), shifts=(), noise=(),
                                                                                  translations=()))


def test_nnunet_mirroring_axes_are_the_checkpoints_whether_or_not_mirroring_is_on(nnunet_case):
    from agg2exp_core.models import load_model

    two, unmirrored, _ = nnunet_case
    assert u.allowed_mirror_axes(load_model(two, device="cpu", fold=0)) == (0, 2)
    mirrored = load_model(two, device="cpu", fold=0, mirroring=True)
    assert u.allowed_mirror_axes(mirrored) == (0, 2)
    assert u.flip_axes(mirrored) == ()  # it averages those flips itself: flipping again adds only cost
    assert u.flip_axes(load_model(two, device="cpu", fold=0)) == (0, 2)
    assert u.allowed_mirror_axes(load_model(unmirrored, device="cpu")) == ()
    flips = [a.value for a in u.TTASpec().augmentations((0, 2)) if a.kind == "flip"]
    assert flips == [0, 2]


def test_noise_is_seeded_per_perturbation_so_a_rerun_repeats_it_and_two_draws_differ():
    model = segmenter(Bands([0.0, 0.5, 1.0], [0.3, 0.01, 0.3]), 3)
    image = three_bands()
    once = u.TTASpec(scales=(), shifts=(), noise=(0.02,), translations=())
    twice = u.TTASpec(scales=(), shifts=(), noise=(0.02, 0.02), translations=())
    np.testing.assert_array_equal(features_of(model, image, once)[u.AGREEMENT],
                                  features_of(model, image, once)[u.AGREEMENT])
    # the two noisy predictions of class 1 disagree with each other, not only with the clean one
    assert features_of(model, image, twice)[u.AGREEMENT][1] < features_of(model, image, once)[u.AGREEMENT][1]
