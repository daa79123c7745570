"""``Segmenter``: a loaded model with everything needed to use it, whatever format it came in."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models.inference import WindowSpec, predict_logits


@dataclass
class Segmenter:
    """A segmentation network with its label names (channel order), preprocessing and windows.

    Calling it runs the network on one batch of windows ``[B,1,*roi] -> [B,l,*roi]``;
    ``predict`` runs the whole volume through ``window`` (MONAI's sliding window). Every
    explainer takes a Segmenter as its model and uses its window.
    """

    network: torch.nn.Module
    network_config: dict
    label_names: list[str]
    preprocessing: Preprocessing
    window: WindowSpec
    checkpoint_sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def roi_size(self) -> tuple[int, ...]:
        return self.window.roi_size

    @property
    def overlap(self):
        return self.window.overlap

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[l,*S]`` (float32, CPU) of an image ``[1,*S]`` by sliding-window inference."""
        return predict_logits(self.network, image.float(), self.window).float()


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
