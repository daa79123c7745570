"""Evaluation of voxel attribution methods (Agg2Exp Sec. 3.3, App. B.2; efficient-KernelSHAP Sec. IV-C).

Metrics of one attribution map ``e_c [*S]`` explaining the aggregated function
``f_c(x) = sum_{P0_c} f_c(x)`` (class-c logits summed over the voxels predicted ``c`` on
the *clean* image; the mask stays fixed under perturbation, as for the gradient methods):

- faithfulness correlation: Pearson correlation, over ``n = 100`` random voxel subsets
  ``S_i`` of size ``m``, between ``sum_{S_i} e_c`` and ``f_c(x) - f_c(x_{S_i})`` (voxels of
  ``S_i`` set to the baseline 0). The paper uses ``m = 224**2``; on small (demo) volumes
  that would remove a third of the image, so ``m = min(224**2, max_fraction * p)`` with
  ``max_fraction = 0.1`` by default. Higher is better.
- sensitivity (Quantus' avg-/max-sensitivity, ``n = 3``, ``lower_bound = 0.1``):
  attributions of ``x + U(-0.1, 0.1)·w`` (or ``N(0, (0.1·w)^2)``) noise against those of ``x``,
  ``w`` the width of the model's intensity range, so the noise is 10 % of the range whatever
  the normalisation (±205 HU for the [0, 1] window over 2048 HU; not ±0.1 SD = ±36 HU for a
  z-scored nnU-Net),
  both divided by their max ``|e|`` (App. B.2 normalises every map). The distance is
  ``||e - e'||_F / ||e||_F`` by default (relative change; the scale of the paper's
  Table 1); ``denominator="input"`` divides by ``||x||_F`` as Quantus does. Lower is better.
- complexity: fraction of voxels whose ``|e| / max|e|`` exceeds ``theta = 0.1``. Lower is better.
- efficiency: seconds to compute the attributions of all requested classes of one volume
  (they share their forward passes), and that time divided by the number of classes.
- MoRF / LeRF perturbation curves: see ``curves.py``.

``model`` in these functions is a ``Segmenter`` (its network through its own sliding
window) or a callable ``[B, 1, *S] -> [B, l, *S]`` of whole-volume logits.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

from agg2exp_core.attribution.options import default_range, split_model
from agg2exp_core.errors import InputError
from agg2exp_core.models.inference import infer_logits

FAITHFULNESS_SUBSET = 224 ** 2


def _forward(model: Callable, x: torch.Tensor) -> torch.Tensor:
    """Whole-volume logits ``[B, l, *S]`` on the CPU (float32) of inputs ``[B, 1, *S]``."""
    network, window = split_model(model)
    return infer_logits(network, x, window).float()


def aggregated_logits(model: Callable, images: torch.Tensor, classes: Sequence[int],
                      masks: torch.Tensor, batch_size: int = 4) -> np.ndarray:
    """``f_c`` of each image and class: ``[B, C]`` (sum of class logits over ``masks [C, *S]``)."""
    out = []
    masks = masks.to(torch.float64)
    for i in range(0, len(images), batch_size):
        y = _forward(model, images[i:i + batch_size]).to(torch.float64)
        z = y[:, list(classes)]                                  # [b, C, *S]
        out.append((z * masks[None]).flatten(2).sum(dim=2))
    return torch.cat(out).numpy()


def clean_prediction(model: Callable, image: torch.Tensor) -> np.ndarray:
    """Argmax prediction ``[*S]`` of the clean image."""
    return _forward(model, image[None])[0].argmax(dim=0).numpy()


def subset_size(n_voxels: int, size: int = FAITHFULNESS_SUBSET, max_fraction: float = 0.1) -> int:
    """``min(size, max_fraction * n_voxels)``, at least 1 (see module docstring)."""
    return int(max(1, min(size, int(max_fraction * n_voxels))))


def random_subsets(n_voxels: int, n: int = 100, size: int = FAITHFULNESS_SUBSET,
                   max_fraction: float = 0.1, seed: int | None = 0) -> np.ndarray:
    """``[n, m]`` flat voxel indices, each row a uniform subset without replacement."""
    rng = np.random.default_rng(seed)
    m = subset_size(n_voxels, size, max_fraction)
    return np.stack([rng.choice(n_voxels, m, replace=False) for _ in range(n)])


def faithfulness_drops(model: Callable, image: torch.Tensor, classes: Sequence[int], subsets: np.ndarray,
                       baseline: float = 0.0, prediction: np.ndarray | None = None,
                       batch_size: int = 4) -> np.ndarray:
    """``f_c(x) - f_c(x_S)`` for each subset and class: ``[n, C]``."""
    prediction = clean_prediction(model, image) if prediction is None else prediction
    masks = torch.from_numpy(np.stack([prediction == c for c in classes]))
    clean = aggregated_logits(model, image[None], classes, masks)[0]
    drops = []
    for i in range(0, len(subsets), batch_size):
        rows = subsets[i:i + batch_size]
        x = image.detach().float().cpu().reshape(1, -1).repeat(len(rows), 1)
        for j, idx in enumerate(rows):
            x[j, torch.from_numpy(idx)] = baseline
        perturbed = aggregated_logits(model, x.reshape(len(rows), 1, *image.shape[1:]), classes, masks, batch_size)
        drops.append(clean[None] - perturbed)
    return np.concatenate(drops)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def bootstrap_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int | None = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the Pearson correlation over pairs."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (n_boot, len(x)))
    r = np.array([pearson(x[i], y[i]) for i in idx])
    r = r[np.isfinite(r)]
    if not len(r):
        return float("nan"), float("nan")
    return float(np.quantile(r, alpha / 2)), float(np.quantile(r, 1 - alpha / 2))


def subset_sums(attributions: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Attribution summed over each subset: ``[n]`` (``attributions [*S]``)."""
    return np.asarray(attributions, float).reshape(-1)[subsets].sum(axis=1)


def faithfulness_correlation(model: Callable, image: torch.Tensor, attributions, class_id: int, *,
                             n: int = 100, size: int = FAITHFULNESS_SUBSET, max_fraction: float = 0.1,
                             baseline: float = 0.0, seed: int | None = 0, batch_size: int = 4) -> float:
    """Faithfulness correlation of one class's attribution map ``[*S]`` (module docstring)."""
    attributions = as_numpy(attributions).reshape(image.shape[1:])
    subsets = random_subsets(attributions.size, n, size, max_fraction, seed)
    drops = faithfulness_drops(model, image, [class_id], subsets, baseline, batch_size=batch_size)[:, 0]
    return pearson(subset_sums(attributions, subsets), drops)


def normalise(attributions) -> np.ndarray:
    """Divide by the largest ``|value|`` (all-zero maps stay zero)."""
    a = as_numpy(attributions).astype(np.float64)
    peak = np.abs(a).max() if a.size else 0.0
    return a / peak if peak > 0 else a


def complexity(attributions, theta: float = 0.1) -> float:
    """Fraction of voxels with ``|e| / max|e| > theta``."""
    a = np.abs(normalise(attributions))
    return float((a > theta).mean()) if a.size else float("nan")


def noisy_copies(image: torch.Tensor, n: int = 3, lower_bound: float = 0.1, noise: str = "uniform",
                 seed: int | None = 0, span: float = 1.0) -> list[torch.Tensor]:
    """``n`` copies of the image with uniform ``U(-lb, lb)`` or Gaussian ``N(0, lb^2)`` noise, ``lb`` =
    ``lower_bound * span``: Quantus' 0.1 is a fraction of a [0, 1] input, so ``span`` is the width of
    the model's intensity range (``options.default_range``; 11.4 for an nnU-Net CT z-score)."""
    lower_bound = lower_bound * float(span)
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    out = []
    for _ in range(n):
        if noise == "uniform":
            eps = (torch.rand(image.shape, generator=gen) * 2 - 1) * lower_bound
        elif noise == "gaussian":
            eps = torch.randn(image.shape, generator=gen) * lower_bound
        else:
            raise InputError("noise", f"unknown noise '{noise}' (use uniform or gaussian)")
        out.append(image + eps.to(image.dtype))
    return out


def sensitivity_distances(attributions, perturbed: Sequence, image: torch.Tensor | None = None,
                          denominator: str = "attribution") -> np.ndarray:
    """``||e - e'|| / ||e||`` (or ``/ ||x||``) of normalised maps, one per perturbed map."""
    a = normalise(attributions)
    if denominator == "attribution":
        scale = np.linalg.norm(a)
    elif denominator == "input":
        scale = float(torch.linalg.vector_norm(torch.as_tensor(image, dtype=torch.float64)))
    else:
        raise InputError("denominator", f"unknown '{denominator}' (use attribution or input)")
    d = np.array([np.linalg.norm(a - normalise(b)) for b in perturbed])
    return d / scale if scale > 0 else np.full(len(d), np.nan)


def sensitivity(model: Callable, image: torch.Tensor, attributions, class_id: int, explain: Callable, *,
                n: int = 3, lower_bound: float = 0.1, noise: str = "uniform", denominator: str = "attribution",
                seed: int | None = 0, **explain_params) -> tuple[float, float]:
    """(average, max) sensitivity of one class's map under ``n`` noisy inputs.

    ``explain(model, image, classes=[class_id], **explain_params) -> [1, *S]``. The noise is
    ``lower_bound`` of the model's intensity range (``noisy_copies``).
    """
    low, high = default_range(model, image)
    perturbed = [as_numpy(explain(model, x, classes=[class_id], **explain_params))[0]
                 for x in noisy_copies(image, n, lower_bound, noise, seed, high - low)]
    d = sensitivity_distances(attributions, perturbed, image, denominator)
    return float(d.mean()), float(d.max())


def timed_explain(explain: Callable, model: Callable, image: torch.Tensor, classes: Sequence[int],
                  **params) -> tuple[np.ndarray, float]:
    """(attributions ``[C, *S]``, seconds) of one explain call (the efficiency metric)."""
    start = time.perf_counter()
    attributions = as_numpy(explain(model, image, classes=list(classes), **params))
    return attributions, time.perf_counter() - start


def as_numpy(x) -> np.ndarray:
    """A tensor or array-like as a numpy array (on the CPU)."""
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


