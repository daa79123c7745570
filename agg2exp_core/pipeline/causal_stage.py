"""What precompute adds for causal and supervoxel runs: cohort donors, effect matrices, relevance masks.

- Donors (``donor="images"``): other cases of the same manifest, loaded with the model's
  preprocessing (RAS, target spacing, HU window to [0, 1]) and brought onto the case's
  grid: resampled to the case's spacing when it differs (MONAI ``Spacing``, only when the
  preprocessing keeps native spacing), then centre-cropped or padded with the model's air to its
  shape (MONAI ``ResizeWithPadOrCrop``), i.e. volumes are aligned at their centres. A run
  draws one pool of ``n_samples + 1`` cases (seeded) and each case uses the pool without itself.
- Per case: the class x region ATE matrix (``causal_effect``), optional component effects
  (``components``: ``"blocks"`` or module names; ``channels_of``; ``ablation``), and with
  ``relevance_share`` (kernelshap or causal) each class's relevance mask (npz key
  ``relevance_<c>``) and its faithfulness (``relevance_mask``).

Regions map to RoIs by the predicted label holding most of their voxels (``semantic``: one
region per predicted class); several regions of one RoI (``cubes``, ``fcc``, ``hybrid``)
add up, with standard errors combined as if independent (each region draws its own seeded
donor order; from a small pool the same donors recur, so this is an approximation).
``explain_case`` and ``CaseExtras.rows`` are the compute and write halves a scheduler calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from agg2exp_core import store
from agg2exp_core.attribution.causal import (ABLATIONS, ComponentEffects, RegionEffects, causal_run, summed_effects,
                                             component_effects, mask_faithfulness, relevance_units)
from agg2exp_core.attribution.causal.relevance import check_share
from agg2exp_core.attribution.kernelshap import kernelshap_run
from agg2exp_core.errors import InputError
from agg2exp_core.io.images import Case, load_case
from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models import Segmenter
from agg2exp_core.pipeline.artifacts import relevance_arrays

SUPERVOXEL_METHODS = ("kernelshap", "causal")


@dataclass(frozen=True)
class ExtrasSpec:
    """Precompute-level parameters of a run (taken out of ``--params`` before ``explain``)."""

    relevance_share: float | None = None
    components: str | tuple[str, ...] | None = None
    channels_of: str | None = None
    ablation: str = "mean"

    @classmethod
    def pop_from(cls, method: str, params: dict) -> "ExtrasSpec":
        """Take the extras out of ``params`` (in place) and check them against the method."""
        if "donors" in params:
            raise InputError("--params", "donors come from the cohort in precompute: use \"donor\": \"images\"")
        share = params.pop("relevance_share", None)
        components = params.pop("components", None)
        channels_of = params.pop("channels_of", None)
        ablation = params.pop("ablation", "mean")
        if share is not None and method not in SUPERVOXEL_METHODS:
            raise InputError("--params", f"relevance_share needs a supervoxel method ({', '.join(SUPERVOXEL_METHODS)})")
        if (components is not None or channels_of is not None) and method != "causal":
            raise InputError("--params", "components / channels_of need --method causal")
        if ablation not in ABLATIONS:
            raise InputError("--params", f"unknown ablation '{ablation}' (use {', '.join(ABLATIONS)})")
        if isinstance(components, list):
            components = tuple(str(c) for c in components)
        return cls(None if share is None else check_share(share), components, channels_of, ablation)

    @property
    def wants_components(self) -> bool:
        return self.components is not None or self.channels_of is not None


def needs_donors(method: str, params: dict) -> bool:
    return method == "causal" and params.get("donor") in ("images", "mean")


class CohortDonors:
    """Donor images of a run: a seeded pool of the manifest's cases, loaded once, fitted per case."""

    def __init__(self, rows: Sequence[dict], preprocessing: Preprocessing, n_donors: int, seed: int = 0):
        order = np.random.default_rng(int(seed)).permutation(len(rows))[:n_donors + 1]
        self.rows = [rows[i] for i in sorted(order)]
        self.preprocessing = preprocessing
        self.n_donors = n_donors
        self._loaded: dict[str, Case] = {}

    def for_case(self, case: Case) -> list[torch.Tensor]:
        """Up to ``n_donors`` other cases on this case's grid, ``[1, *S]`` each."""
        out = []
        for row in self.rows:
            case_id = str(row["case_id"])
            if case_id == case.case_id or len(out) == self.n_donors:
                continue
            if case_id not in self._loaded:
                self._loaded[case_id] = load_case({k: v for k, v in row.items() if k in ("case_id", "image")},
                                                  self.preprocessing)
            out.append(fit_to_grid(self._loaded[case_id], case, self.preprocessing.air_value(),
                                   self.preprocessing.value_range()))
        if not out:
            raise InputError("donor", "donor='images' needs at least two cases in the manifest")
        return out


def fit_to_grid(donor: Case, case: Case, air: float = 0.0, value_range: tuple[float, float] = (0.0, 1.0)
                ) -> torch.Tensor:
    """A donor image ``[1, *S]`` on a case's grid: same spacing, centre-cropped or padded with the
    model's ``air`` and clamped to its intensity ``value_range`` (both in the model's input space:
    0.0 and [0, 1] only for the default HU window)."""
    from monai.data import MetaTensor
    from monai.transforms import ResizeWithPadOrCrop, Spacing

    image = donor.image
    if not np.allclose(donor.spacing, case.spacing, rtol=1e-3):
        image = Spacing(pixdim=case.spacing, mode="bilinear")(MetaTensor(image, affine=torch.as_tensor(donor.affine)))
    fitted = ResizeWithPadOrCrop(tuple(case.image.shape[1:]), mode="constant", value=float(air))(image)
    plain = fitted.as_tensor() if isinstance(fitted, MetaTensor) else torch.as_tensor(fitted)
    return plain.float().clamp(*value_range)


@dataclass
class CaseExtras:
    """A case's results beyond the attribution map (see module docstring)."""

    effects: RegionEffects | None = None
    region_labels: np.ndarray | None = None       # [R] predicted label (channel) of each region
    components: ComponentEffects | None = None
    relevance: dict[int, tuple[np.ndarray, int, float, float]] = field(default_factory=dict)  # c -> mask, units, dices
    share: float | None = None

    def artifact(self) -> dict[str, np.ndarray]:
        return relevance_arrays({c: mask for c, (mask, *_) in self.relevance.items()})

    def rows(self, run_id: str, case_id: str, classes: Sequence[int], class_roi_ids: Sequence[int]) -> dict:
        """Rows of ``causal_effect``, ``component_effect`` and ``relevance_mask`` (RoI ids by channel)."""
        targets = [int(class_roi_ids[c]) for c in classes]
        out = {}
        if self.effects is not None:
            labels, ate, se, n = self.by_roi()
            out["causal_effect"] = store.causal_rows(run_id, case_id, targets, [class_roi_ids[l] for l in labels],
                                                     ate, se, n)
        if self.components is not None:
            e = self.components
            out["component_effect"] = [[run_id, case_id, t, name, b, _num(e.ate[i, b]), _num(e.se[i, b]), int(e.n)]
                                       for i, t in enumerate(targets) for b, name in enumerate(e.components)]
        if self.relevance:
            out["relevance_mask"] = [[run_id, case_id, int(class_roi_ids[c]), float(self.share), int(units),
                                      int(mask.sum()), _num(keep), _num(remove)]
                                     for c, (mask, units, keep, remove) in self.relevance.items()]
        return out

    def by_roi(self) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """The region matrix summed per RoI label: (labels, ate [C, L], se [C, L], n [L])."""
        e, labels = self.effects, sorted(set(self.region_labels.tolist()))
        sums = [summed_effects(e, np.flatnonzero(self.region_labels == l), e.donor != "images") for l in labels]
        ate = np.stack([a for a, _, _ in sums], axis=1)
        se = np.stack([s for _, s, _ in sums], axis=1)   # from per-donor sums: the regions share donors
        n = np.array([k for _, _, k in sums])
        return labels, ate, se, n


def explain_case(model: Segmenter, case: Case, prediction: torch.Tensor, method: str, params: dict,
                 classes: Sequence[int], extras: ExtrasSpec, donors: CohortDonors | None = None
                 ) -> tuple[np.ndarray, CaseExtras]:
    """Attributions ``[C, *S]`` of a causal or supervoxel run and the case's extras."""
    params = {"spacing": case.spacing, **params}
    common = dict(mask=prediction, device=model.device)
    if donors is not None:
        params["donors"] = donors.for_case(case)
    pred = prediction.numpy()
    out = CaseExtras(share=extras.relevance_share)
    if method == "causal":
        out.effects = causal_run(model, case.image, list(classes), **common, **params)
        out.region_labels = _majority_labels(out.effects.partition, out.effects.region_ids, pred)
        attributions = out.effects.voxel_map()
        values, partition, ids = out.effects.ate, out.effects.partition, out.effects.region_ids
    else:
        shap = kernelshap_run(model, case.image, list(classes), **common, **params)
        attributions = shap.voxel_map()
        values, partition, ids = shap.values, shap.partition, np.arange(shap.values.shape[1])
    if extras.wants_components:
        sampling = {k: params[k] for k in ("donor", "donors", "baseline", "n_samples", "seed") if k in params}
        out.components = component_effects(model, case.image, list(classes), mask=prediction,
                                           components=extras.components or "blocks", channels_of=extras.channels_of,
                                           ablation=extras.ablation, **sampling)
    if extras.relevance_share is not None:
        out.relevance = _relevance(model, case, pred, classes, values, partition, ids, extras.relevance_share,
                                   params.get("baseline", model.air_value(case.image)))
    return attributions.astype(np.float32), out


def _relevance(model, case, pred, classes, values, partition, ids, share, baseline) -> dict:
    chosen = [relevance_units(values[i], share) for i in range(len(classes))]
    masks = np.stack([np.isin(partition, ids[k]) & (partition >= 0) for k in chosen])
    base = float(baseline) if np.ndim(baseline) == 0 else 0.0
    keep, remove = mask_faithfulness(model, case.image, masks, list(classes), pred, base)
    return {int(c): (masks[i], len(chosen[i]), float(keep[i]), float(remove[i])) for i, c in enumerate(classes)}


def _majority_labels(partition: np.ndarray, region_ids: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The predicted label holding most of each region's voxels ``[R]``."""
    inside = partition >= 0
    row = np.searchsorted(region_ids, partition[inside])
    n_labels = int(prediction.max()) + 1
    counts = np.bincount(row * n_labels + prediction[inside], minlength=len(region_ids) * n_labels)
    return counts.reshape(len(region_ids), n_labels).argmax(axis=1)


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x
