"""Toy models with known sanity-check answers (tests of analysis/sanity and the sanity command)."""
from __future__ import annotations

import numpy as np
import torch

from agg2exp_core.analysis.sanity.similarity import edge_magnitude


class DenseLinear(torch.nn.Module):
    """Every voxel's class-c logit is ``sum_u W[c, u] x(u)``: the vanilla gradient of class c's logit summed
    over its mask is ``|mask_c| W[c]``, so a map is its class's weights and nothing else. "Trained" weights
    share a common pattern (``shared``: its share of each class's weights), so two classes' maps agree with
    a known Spearman; re-initialised weights are independent normals (rank correlation ~0 with anything)."""

    def __init__(self, shape, n_classes: int = 3, shared: float = 0.8, seed: int = 0):
        super().__init__()
        self.shape = tuple(shape)
        size = int(np.prod(shape))
        generator = torch.Generator().manual_seed(seed)
        common = torch.randn(size, generator=generator)
        own = torch.randn(n_classes, size, generator=generator)
        self.weight = torch.nn.Parameter(shared * common + (1 - shared) * own)

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.flatten(1) @ self.weight.T  # [B, l]
        return logits[:, :, None, None, None].expand(-1, -1, *self.shape)


class LinearNet(torch.nn.Module):
    """DenseLinear as the layer of a network (the cascade randomises modules, not the top-level one)."""

    def __init__(self, shape, n_classes: int = 3, shared: float = 0.8, seed: int = 0):
        super().__init__()
        self.dense = DenseLinear(shape, n_classes, shared, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


def band_mask(shape, n_classes: int) -> torch.Tensor:
    """A label map giving every class a band of slices along x (the aggregation masks)."""
    mask = torch.zeros(shape, dtype=torch.long)
    edges = np.linspace(0, shape[0], n_classes + 1).astype(int)
    for c in range(n_classes):
        mask[edges[c]:edges[c + 1]] = c
    return mask


def edge_explainer(model, image, classes, **params) -> torch.Tensor:
    """A 'method' that ignores the model: the CT's Sobel edge magnitude for every class."""
    edges = torch.as_tensor(edge_magnitude(image[0].numpy()), dtype=image.dtype)
    return edges.expand(len(classes), *edges.shape).clone()
