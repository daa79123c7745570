"""Models: networks, checkpoint formats, the ``Segmenter`` interface and sliding-window inference."""
from agg2exp_core.models.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from agg2exp_core.models.devices import resolve_device
from agg2exp_core.models.inference import WindowSpec, predict_logits
from agg2exp_core.models.networks import NETWORK_DEFAULTS, PAPER_NETWORK, build_network
from agg2exp_core.models.segmenter import Segmenter, dice_per_class
from agg2exp_core.models.sources import ModelSpec, load_model

__all__ = ["NETWORK_DEFAULTS", "PAPER_NETWORK", "ModelSpec", "Segmenter", "WindowSpec", "build_network",
           "dice_per_class", "file_sha256", "load_checkpoint", "load_model", "predict_logits", "resolve_device",
           "save_checkpoint"]
