"""The model's own uncertainty per case and class: test-time augmentation (TTA) and fold ensembles.

Given the clean prediction of a case (its logits, already computed by ``precompute``), the
image is perturbed a few times (``TTASpec``), each perturbed prediction is mapped back onto
the clean grid, and an nnU-Net folder with several folds adds each fold's own prediction:
the *members*. Per class, ``uncertainty_features`` returns how far the members agree and how
sure their mean softmax is (features named by the constants below; docs/METHOD.md, section 8).

Flips are taken ONLY along the axes the model allows (``allowed_mirror_axes``): a flip the
network never saw in training swaps lateral classes (lung_left / lung_right) and would read as
disagreement. Intensity, noise and translation perturbations are valid for every model.
Agreement and entropy follow the TTA / ensemble baselines of Zenk et al. (MedIA 2025).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from monai.transforms import Affine, Flip, RandGaussianNoise, ScaleIntensityFixedMean, ShiftIntensity
from scipy import ndimage

from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import predict_logits
from agg2exp_core.models.segmenter import Segmenter

# Feature names (the ``feature`` column of ``case_uncertainty``), one value per case and class.
AGREEMENT = "tta_dice"                 # mean pairwise Dice between all members (clean one included)
AGREEMENT_CLEAN = "tta_dice_clean"     # mean Dice of each other member against the clean prediction
FOLD_AGREEMENT = "fold_dice"           # mean pairwise Dice between the folds (nnU-Net, >= 2 folds only)
VOLUME_CV = "tta_volume_cv"            # coefficient of variation of the predicted volume across members
ENTROPY_MASK = "entropy_mask"          # mean normalised entropy of the members' mean softmax in the mask
ENTROPY_BOUNDARY = "entropy_boundary"  # the same on the mask's boundary voxels
MARGIN_MASK = "margin_mask"            # mean top-1 minus top-2 probability in the mask
MARGIN_BOUNDARY = "margin_boundary"    # the same on the mask's boundary voxels
VOLUME_ML = "volume_ml"                # predicted (clean) volume in ml
COMPONENTS = "components"              # connected components of the clean mask (26-connectivity)
LARGEST_SHARE = "largest_component_share"  # share of the mask in its largest component
FEATURES = (AGREEMENT, AGREEMENT_CLEAN, FOLD_AGREEMENT, VOLUME_CV, ENTROPY_MASK, ENTROPY_BOUNDARY, MARGIN_MASK,
            MARGIN_BOUNDARY, VOLUME_ML, COMPONENTS, LARGEST_SHARE)


@dataclass(frozen=True)
class Augmentation:
    """One perturbation of the model's input and the map of its prediction back to the clean grid.

    ``kind``: flip (``value`` the spatial axis), scale (contrast factor around the image mean),
    shift (brightness, a fraction of the intensity range), noise (std, a fraction of the range),
    translate (whole voxels per axis; the prediction is shifted back, border voxels repeated).
    """

    kind: str
    value: float | tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.kind}{list(self.value) if isinstance(self.value, tuple) else self.value}"

    def apply(self, image: torch.Tensor, value_range: tuple[float, float], seed: int) -> torch.Tensor:
        """The perturbed image ``[1,*S]`` (MONAI transforms)."""
        span = value_range[1] - value_range[0]
        if self.kind == "flip":
            return _plain(Flip(spatial_axis=int(self.value))(image))
        if self.kind == "scale":
            return _plain(ScaleIntensityFixedMean(factor=float(self.value), fixed_mean=True)(image))
        if self.kind == "shift":
            return _plain(ShiftIntensity(offset=float(self.value) * span)(image))
        if self.kind == "noise":
            noise = RandGaussianNoise(prob=1.0, std=float(self.value) * span)
            noise.set_random_state(seed)
            return _plain(noise(image.float())).to(image.dtype)
        if self.kind == "translate":
            return _translate(image, self.value)
        raise InputError("augmentation", f"unknown kind {self.kind!r}")

    def invert(self, probs: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[l,*S]`` of the perturbed image, back on the clean grid."""
        if self.kind == "flip":
            return _plain(Flip(spatial_axis=int(self.value))(probs))
        if self.kind == "translate":
            return _translate(probs, tuple(-int(v) for v in self.value))
        return probs  # intensity perturbations keep the geometry


def _translate(volume: torch.Tensor, voxels: Sequence[int]) -> torch.Tensor:
    """Whole-voxel translation; nearest-neighbour sampling keeps it exact, the border is repeated."""
    shift = Affine(translate_params=tuple(float(v) for v in voxels), mode="nearest", padding_mode="border",
                   image_only=True)
    return _plain(shift(volume.float())).to(volume.dtype)


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


@dataclass(frozen=True)
class TTASpec:
    """The perturbations of one TTA run (defaults: 7 intensity / noise / translation passes, plus one
    flip per axis the model allows). ``seed`` fixes the noise (``seed + i`` for the i-th perturbation), so a
    rerun gives the same features."""

    scales: tuple[float, ...] = (-0.05, 0.05)
    shifts: tuple[float, ...] = (-0.02, 0.02)
    noise: tuple[float, ...] = (0.02,)
    translations: tuple[tuple[int, ...], ...] = ((1, -1, 1), (-2, 2, -1))
    flips: bool = True
    folds: bool = True
    seed: int = 0

    def augmentations(self, mirror_axes: Sequence[int] = ()) -> list[Augmentation]:
        flips = [Augmentation("flip", int(a)) for a in mirror_axes] if self.flips else []
        return flips + [Augmentation("scale", s) for s in self.scales] + \
            [Augmentation("shift", s) for s in self.shifts] + [Augmentation("noise", s) for s in self.noise] + \
            [Augmentation("translate", tuple(int(v) for v in t)) for t in self.translations]

    def to_dict(self) -> dict:
        return {"scales": list(self.scales), "shifts": list(self.shifts), "noise": list(self.noise),
                "translations": [list(t) for t in self.translations], "flips": self.flips, "folds": self.folds,
                "seed": self.seed}


def allowed_mirror_axes(model: Segmenter) -> tuple[int, ...]:
    """Spatial axes the model may be flipped along: what its format declares, else none.

    nnU-Net: the checkpoint's ``inference_allowed_mirroring_axes`` (recorded by the loader, whether or
    not ``--mirroring`` is on); a MONAI bundle: ``mirror_axes`` in its metadata.json if it declares
    them. Our checkpoints, plain state dicts and TorchScript declare nothing: no flips.
    """
    axes = model.network_config.get("allowed_mirror_axes") or ()
    return tuple(int(a) for a in axes)


def flip_axes(model: Segmenter) -> tuple[int, ...]:
    """The allowed axes the model does not mirror already: an nnU-Net model run with ``--mirroring``
    averages every flip itself, so a flipped input gives the same prediction and adds nothing but cost."""
    mirrored = set(getattr(model.network, "mirror_axes", ()) or ())
    return tuple(a for a in allowed_mirror_axes(model) if a not in mirrored)


def fold_networks(model: Segmenter) -> list[Callable]:
    """Each fold of an nnU-Net ensemble as its own network (same mirroring); [] for one fold / other models."""
    folds = getattr(model.network, "folds", None)
    if folds is None or len(folds) < 2:
        return []
    return [type(model.network)([fold], model.network.mirror_axes).eval() for fold in folds]


def uncertainty_features(model: Segmenter, image: torch.Tensor, clean_logits: torch.Tensor,
                         spacing: Sequence[float], spec: TTASpec | None = None) -> dict[str, np.ndarray]:
    """Feature name -> ``[n_classes]`` values (NaN where undefined, e.g. entropy of an empty mask).

    ``image``: the model's input ``[1,*S]``; ``clean_logits``: its clean prediction ``[l,*S]``;
    ``spacing``: voxel size in mm on that grid.
    """
    spec = spec or TTASpec()
    n_classes = model.n_classes
    if clean_logits.dim() != image.dim() or clean_logits.shape[0] != n_classes or clean_logits.shape[1:] != image.shape[1:]:
        raise InputError("model", f"expected clean logits [{n_classes}, {', '.join(map(str, image.shape[1:]))}], "
                                  f"got {list(clean_logits.shape)}")
    clean = torch.softmax(clean_logits.float(), 0)
    labels, prob_sum = [_compact(clean.argmax(0), n_classes)], clean.clone()
    value_range = model.value_range(image)
    for index, augmentation in enumerate(spec.augmentations(flip_axes(model))):
        moved = augmentation.apply(image, value_range, spec.seed + index)  # two noise draws differ
        probs = augmentation.invert(torch.softmax(model.predict(moved), 0))
        labels.append(_compact(probs.argmax(0), n_classes))
        prob_sum += probs
    fold_labels = []
    for network in (fold_networks(model) if spec.folds else []):
        probs = torch.softmax(predict_logits(network, image.float(), model.window).float(), 0)
        fold_labels.append(_compact(probs.argmax(0), n_classes))
        prob_sum += probs
    members = [m.numpy() for m in labels + fold_labels]
    features = agreement_features(members, n_classes)
    if len(fold_labels) >= 2:
        features[FOLD_AGREEMENT] = mean_pairwise_dice([m.numpy() for m in fold_labels], n_classes)
    features.update(confidence_features(prob_sum / len(members), members[0]))
    features.update(shape_features(members[0], n_classes, spacing))
    return features


def _compact(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """A member's label map in one byte per voxel where the classes fit (8 members of a 512²×300 CT: 0.6 GB, not 5)."""
    return labels.to(torch.uint8 if n_classes <= 256 else torch.int16)


def confusion(a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    """``[l, l]`` voxel counts of (class in a, class in b)."""
    return np.bincount(a.ravel().astype(np.int64) * n_classes + b.ravel(), minlength=n_classes ** 2
                       ).reshape(n_classes, n_classes)


def pair_dice(a: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of every class between two label maps, from one confusion matrix (one pass over the voxels,
    where MONAI's ``compute_dice`` would one-hot both maps); NaN where both lack the class."""
    counts = confusion(a, b, n_classes)
    sizes = counts.sum(1) + counts.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2.0 * np.diag(counts) / sizes, np.nan)


def mean_pairwise_dice(members: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    pairs = [pair_dice(members[i], members[j], n_classes)
             for i in range(len(members)) for j in range(i + 1, len(members))]
    return _nanmean(np.array(pairs))


def agreement_features(members: Sequence[np.ndarray], n_classes: int) -> dict[str, np.ndarray]:
    """Pairwise agreement of the members (the first is the clean prediction) and their volume spread."""
    nan = np.full(n_classes, np.nan)
    if len(members) < 2:
        return {AGREEMENT: nan, AGREEMENT_CLEAN: nan, VOLUME_CV: nan}
    volumes = np.array([np.bincount(m.ravel(), minlength=n_classes)[:n_classes] for m in members], float)
    mean_volume = volumes.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.where(mean_volume > 0, volumes.std(0) / mean_volume, np.nan)
    return {AGREEMENT: mean_pairwise_dice(members, n_classes),
            AGREEMENT_CLEAN: _nanmean(np.array([pair_dice(members[0], m, n_classes) for m in members[1:]])),
            VOLUME_CV: cv}


def boundary_voxels(labels: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another class: the inner boundary of every class's mask at once
    (grey dilation != grey erosion of the label map; no per-class morphology)."""
    cross = ndimage.generate_binary_structure(labels.ndim, 1)
    return ndimage.grey_dilation(labels, footprint=cross, mode="nearest") != \
        ndimage.grey_erosion(labels, footprint=cross, mode="nearest")


def confidence_features(mean_probs: torch.Tensor, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Entropy (divided by log l: 0 = sure, 1 = uniform) and top-1 minus top-2 margin of the members'
    mean softmax, averaged over each class's clean mask and over its boundary."""
    n_classes = mean_probs.shape[0]
    entropy = (-torch.special.xlogy(mean_probs, mean_probs).sum(0) / np.log(n_classes)).numpy()
    top = torch.topk(mean_probs, k=min(2, n_classes), dim=0).values
    margin = (top[0] - top[1]).numpy() if n_classes > 1 else np.ones(labels.shape)
    edge = boundary_voxels(labels)
    return {ENTROPY_MASK: _class_means(entropy, labels, n_classes),
            ENTROPY_BOUNDARY: _class_means(entropy[edge], labels[edge], n_classes),
            MARGIN_MASK: _class_means(margin, labels, n_classes),
            MARGIN_BOUNDARY: _class_means(margin[edge], labels[edge], n_classes)}


def _class_means(values: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    sums = np.bincount(labels.ravel(), weights=values.ravel().astype(np.float64), minlength=n_classes)[:n_classes]
    counts = np.bincount(labels.ravel(), minlength=n_classes)[:n_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def shape_features(labels: np.ndarray, n_classes: int, spacing: Sequence[float]) -> dict[str, np.ndarray]:
    """Volume in ml, connected components and the largest component's share of each class's mask.

    ``scipy.ndimage.label`` with 26-connectivity: it returns the component count directly (MONAI's
    connected-component helpers only keep the largest component, through cuCIM or scikit-image).
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=n_classes)[:n_classes]
    components, largest = np.zeros(n_classes), np.full(n_classes, np.nan)
    full = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for c in np.flatnonzero(counts):
        parts, n = ndimage.label(labels == c, structure=full)
        components[c] = n
        largest[c] = np.bincount(parts.ravel())[1:].max() / counts[c]
    return {VOLUME_ML: counts * voxel_ml, COMPONENTS: components, LARGEST_SHARE: largest}


def _nanmean(rows: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN (no warning) where a column has no value."""
    valid = np.isfinite(rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid.any(0), np.where(valid, rows, 0).sum(0) / valid.sum(0), np.nan)
