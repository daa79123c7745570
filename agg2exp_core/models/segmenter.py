"""``Segmenter``: a loaded model with everything needed to use it, whatever format it came in."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from agg2exp_core.io.preprocessing import ModelPreprocessing
from agg2exp_core.models.inference import Window, predict_logits

SOURCES = ("agg2exp", "bundle", "nnunet", "torchscript", "state_dict")


@dataclass
class Segmenter:
    """A segmentation network with its label names (channel order), preprocessing and window.

    Calling it runs the network on one batch of windows ``[B,1,*roi] -> [B,l,*roi]``;
    ``predict`` runs the whole volume through ``window`` (MONAI's or nnU-Net's sliding
    window; ``None``: one forward pass of the whole volume). Every explainer takes a
    Segmenter as its model, uses its window, and takes ``air_value`` (-1024 HU in the
    model's intensity space) as its default baseline. ``source`` names the format it was
    loaded from (``models.sources.load_model``).
    """

    network: torch.nn.Module
    network_config: dict
    label_names: list[str]
    preprocessing: ModelPreprocessing
    window: Window | None
    checkpoint_sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = "agg2exp"

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def roi_size(self) -> tuple[int, ...] | None:
        return self.window.roi_size if self.window is not None else None

    @property
    def overlap(self):
        return getattr(self.window, "overlap", None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[l,*S]`` (float32, CPU) of an image ``[1,*S]`` by sliding-window inference."""
        return predict_logits(self.network, image.float(), self.window).float()

    def air_value(self, image: torch.Tensor | None = None) -> float:
        """-1024 HU in the model's input space: the default baseline of the explainers."""
        return self.preprocessing.air_value(image)

    def value_range(self, image: torch.Tensor | None = None) -> tuple[float, float]:
        """(low, high) intensities of a preprocessed CT in the model's input space (donor clamps, noise scale)."""
        return self.preprocessing.value_range(image)

    def provenance(self) -> dict:
        """What a run records about its model: source, network, preprocessing, window, weights."""
        window = None if self.window is None else {"kind": self.window.kind, **self.window.to_dict()}
        try:
            air = self.air_value()
        except ValueError:  # per-image scaling: the air value depends on the image
            air = None
        return {"source": self.source, "network": self.network_config, "labels": list(self.label_names),
                "preprocessing": self.preprocessing.to_dict(), "air_value": air, "window": window,
                "sha256": self.checkpoint_sha256}


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(0)


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> np.ndarray:
    """Dice of every class ``[n_classes]`` (MONAI).

    A class predicted but absent from the truth is a false positive: Dice 0 (MONAI's
    ``ignore_empty=True`` would drop it as NaN, hiding exactly the failures the Spearman
    analysis of anomaly vs Dice should see). NaN only where the class is absent from both
    the truth and the prediction: nothing to score.
    """
    p = one_hot(pred[None, None].long(), n_classes)
    t = one_hot(label[None, None].long(), n_classes)
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)[0].cpu().numpy()
    absent = (t[0].flatten(1).sum(1) == 0) & (p[0].flatten(1).sum(1) == 0)
    dice[absent.cpu().numpy()] = np.nan
    return dice
