"""nnU-Net v2 trained-model folders: ``plans.json``, ``dataset.json``, ``fold_K/checkpoint_*.pth``.

nnU-Net's own ``nnUNetPredictor.initialize_from_trained_model_folder`` reads the folder
and builds the network (the trainer's ``build_network_architecture``); the model here is
that network with the weights of every chosen fold (their mean, as nnU-Net ensembles
folds: the tile fusion is linear, so averaging tiles equals averaging fused volumes),
optionally with nnU-Net's test-time mirroring, differentiable. Its window is nnU-Net's
(``NnUNetWindow``), its preprocessing nnU-Net's (``NnUNetPreprocessing``). nnunetv2 is
imported only here, when such a folder is loaded.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import numbers
from pathlib import Path
from typing import Sequence

import torch

from agg2exp_core.errors import InputError
from agg2exp_core.models.devices import resolve_device
from agg2exp_core.models.nnunet_window import NnUNetWindow
from agg2exp_core.models.segmenter import Segmenter
from agg2exp_core.models.sources.common import PREDICT_SW_BATCH, Description, fingerprint, first_line, require
from agg2exp_core.models.sources.nnunet_preprocessing import NnUNetPreprocessing
from agg2exp_core.models.trust import load_tensors, refusal

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
LAYOUT = "an nnU-Net v2 trained-model folder needs plans.json, dataset.json and fold_K/checkpoint_final.pth"


class NnUNetNetwork(torch.nn.Module):
    """The mean logits of nnU-Net's fold networks, each optionally mirrored as nnU-Net's
    ``_internal_maybe_mirror_and_predict`` mirrors (every combination of the allowed axes)."""

    def __init__(self, folds: Sequence[torch.nn.Module], mirror_axes: Sequence[int] = ()):
        super().__init__()
        self.folds = torch.nn.ModuleList(folds)
        self.mirror_axes = tuple(int(a) for a in mirror_axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for network in self.folds:
            y = self._mirrored(network, x)
            total = y if total is None else total + y
        return total / len(self.folds)

    @property
    def flips(self) -> list[tuple[int, ...]]:
        """Tensor dims flipped by each mirrored copy, in the order ``forward`` runs them (after the plain one)."""
        axes = [a + 2 for a in self.mirror_axes]
        return [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]

    def _mirrored(self, network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = network(x)
        flips = self.flips
        for dims in flips:
            y = y + torch.flip(network(torch.flip(x, dims)), dims)
        return y / (len(flips) + 1)


def load_nnunet(folder: Path, device="auto", fold: str | int | Sequence | None = None,
                checkpoint_name: str | None = None, mirroring: bool = False, tile_step_size: float | None = None,
                given: Description = Description(), trust_code: bool = False) -> Segmenter:
    """An nnU-Net v2 model: ``fold`` = 0, [0, 1], ``"0,1"``, ``"all"`` or None (every fold found)."""
    plans = require(folder / "plans.json", LAYOUT)
    dataset = require(folder / "dataset.json", LAYOUT)
    checkpoint_name = checkpoint_name or DEFAULT_CHECKPOINT
    folds = _folds(folder, fold, checkpoint_name)
    step = 0.5 if tile_step_size is None else tile_step_size
    NnUNetWindow((1, 1, 1), step)  # checks tile_step_size before the slow part
    predictor = _predictor(folder, folds, checkpoint_name, mirroring, step, trust_code)
    labels = _label_names(dataset, predictor)
    if given.labels and len(given.labels) != len(labels):
        raise InputError(given.source or "--labels", f"{len(given.labels)} names for {len(labels)} nnU-Net labels")
    patch = tuple(int(p) for p in predictor.configuration_manager.patch_size)
    if len(patch) != 3:
        raise InputError(plans, f"2-D configurations are not supported (patch size {list(patch)})")
    networks = []
    for weights in predictor.list_of_parameters:
        network = copy.deepcopy(predictor.network)
        network.load_state_dict(weights)
        networks.append(network.eval())
    mirror_axes = tuple(predictor.allowed_mirroring_axes or ()) if mirroring else ()
    dev = resolve_device(device)
    options = {"folds": folds, "checkpoint": checkpoint_name, "mirroring": bool(mirroring), "tile_step_size": step}
    config = {"name": "nnunet", "trainer": predictor.trainer_name, "plans": predictor.plans_manager.plans_name,
              "configuration": predictor.configuration_manager.data_identifier, "folder": folder.name,
              "architecture": predictor.configuration_manager.network_arch_class_name, **options,
              "mirror_axes": list(mirror_axes), "allowed_mirror_axes": list(predictor.allowed_mirroring_axes or ())}
    files = [plans, dataset] + [folder / f"fold_{f}" / checkpoint_name for f in folds]
    return Segmenter(network=NnUNetNetwork(networks, mirror_axes).to(dev).eval(), network_config=config,
                     label_names=given.labels or labels,
                     preprocessing=NnUNetPreprocessing(predictor.plans_manager, predictor.configuration_manager,
                                                       predictor.dataset_json),
                     window=NnUNetWindow(patch, step, sw_batch_size=PREDICT_SW_BATCH),
                     checkpoint_sha256=fingerprint(files, options), device=dev, source="nnunet")


def _folds(folder: Path, fold, checkpoint_name: str) -> list:
    """The chosen folds (ints or "all"), each with its checkpoint present."""
    if fold is None:
        found = sorted((p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / checkpoint_name).is_file()),
                       key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
        if not found:
            raise InputError(folder / "fold_0" / checkpoint_name, f"missing: {LAYOUT} (no fold holds {checkpoint_name})")
        chosen = found
    else:
        chosen = _fold_names(fold)
    for f in chosen:
        require(folder / f"fold_{f}" / checkpoint_name, f"fold {f} has no {checkpoint_name} (--checkpoint-name)")
    return [int(f) if f.isdigit() else f for f in chosen]


def _fold_names(fold) -> list[str]:
    """``fold`` as given by the command line ("0,1", "all") or in Python (0, [0, 1], "all"),
    as fold-folder suffixes; anything else (a bool, a negative number, "fold_0") is refused."""
    items = fold.split(",") if isinstance(fold, str) else [fold] if _is_int(fold) else None
    if items is None:
        try:
            items = list(fold)
        except TypeError:
            items = [fold]
    names = [str(int(f)) if _is_int(f) and int(f) >= 0 else f.strip() if isinstance(f, str) else None
             for f in items]
    names = [n for n in names if n != ""]
    if not names or any(n is None or not ((n.isascii() and n.isdigit()) or n == "all") for n in names):
        raise InputError("--fold", f"expected fold numbers or 'all' (an int, a list of ints or comma-separated), "
                                   f"got {fold!r}")
    return names


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _predictor(folder: Path, folds: list, checkpoint_name: str, mirroring: bool, step: float, trust_code: bool):
    """nnU-Net's predictor set up as ``initialize_from_trained_model_folder`` does, but with the
    checkpoints read weights-only (nnU-Net's own call unpickles them, running any payload)."""
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints set-up notes on stdout
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=step, use_gaussian=True, use_mirroring=mirroring,
                                    perform_everything_on_device=False, device=torch.device("cpu"),
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        checkpoints = [_checkpoint(folder / f"fold_{f}" / checkpoint_name, trust_code) for f in folds]
        try:
            _initialise(predictor, folder, checkpoints, trust_code)
        except InputError:
            raise
        except Exception as err:  # nnU-Net raises many types for incomplete plans or checkpoints
            raise InputError(folder, f"cannot load the nnU-Net model ({first_line(err)})") from None
    return predictor


def _checkpoint(path: Path, trust_code: bool) -> dict:
    try:
        blob = load_tensors(path, trust_code, "nnU-Net checkpoint")
    except InputError:
        raise
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise InputError(path, f"cannot read the nnU-Net checkpoint ({first_line(err)})") from None
    if not isinstance(blob, dict) or not {"network_weights", "trainer_name", "init_args"} <= set(blob):
        raise InputError(path, "not an nnU-Net checkpoint (expected network_weights, trainer_name, init_args)")
    return blob


def _initialise(predictor, folder: Path, checkpoints: list[dict], trust_code: bool) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = load_json(str(folder / "dataset.json"))
    plans_manager = PlansManager(load_json(str(folder / "plans.json")))
    first = checkpoints[0]
    configuration = plans_manager.get_configuration(first["init_args"]["configuration"])
    if not trust_code:
        _check_architecture(folder / "plans.json", configuration)
    trainer_class = recursive_find_trainer_class_by_name(str(first["trainer_name"]))  # nnU-Net's own classes only
    n_in = determine_num_input_channels(plans_manager, configuration, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = trainer_class.build_network_architecture(plans_manager, configuration, n_in, n_out,
                                                       enable_deep_supervision=False)
    parameters = [c["network_weights"] for c in checkpoints]
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(network, plans_manager, configuration, parameters, dataset_json,
                                    str(first["trainer_name"]), first.get("inference_allowed_mirroring_axes"))


# Classes plans.json may name without --trust-model-code: nnU-Net's network architectures and
# torch.nn building blocks (nnU-Net imports each named class with pydoc.locate: any module).
ARCHITECTURE_PREFIXES = ("dynamic_network_architectures.architectures.",)
BUILDING_BLOCK_PREFIXES = ("torch.nn.",)


def _check_architecture(plans: Path, configuration) -> None:
    name = str(configuration.network_arch_class_name)
    if not name.startswith(ARCHITECTURE_PREFIXES):
        raise refusal(plans, f"architecture {name!r} is not one of nnU-Net's (dynamic_network_architectures)")
    kwargs = configuration.network_arch_init_kwargs or {}
    for key in configuration.network_arch_init_kwargs_req_import or ():
        value = kwargs.get(key)
        if value is not None and not str(value).startswith(BUILDING_BLOCK_PREFIXES):
            raise refusal(plans, f"{key} {value!r} is not a torch.nn class")


def _label_names(dataset: Path, predictor) -> list[str]:
    manager = predictor.label_manager
    if manager.has_regions:
        raise InputError(dataset, "region-based nnU-Net models (sigmoid outputs) are not supported")
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    n_in = determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json)
    if n_in != 1:
        raise InputError(dataset, f"{n_in} input channels: only single-channel (CT) models are supported")
    by_value = {int(v): str(k) for k, v in predictor.dataset_json["labels"].items() if k != "ignore"}
    names = [by_value.get(i, f"label_{i}") for i in range(manager.num_segmentation_heads)]
    return names
