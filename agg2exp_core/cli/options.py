"""Option groups and value parsers shared by several subcommands (model, executor, lists)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from agg2exp_core.errors import InputError

# ----------------------------------------------------------------------------- shared parsing
def add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("model", "any of: a checkpoint written by 'train', a MONAI bundle folder, "
                                               "an nnU-Net v2 trained-model folder, TorchScript with a sidecar "
                                               "JSON, or a plain state dict with --network and --labels")
    group.add_argument("--model", "--checkpoint", dest="model", required=required, type=Path,
                       help="model file or folder (format recognised from its content)")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0 ...")
    group.add_argument("--fold", help="nnU-Net: fold(s) to use, e.g. 0, 0,1 or all (default: every fold found)")
    group.add_argument("--checkpoint-name", help="nnU-Net: checkpoint file in fold_K (default checkpoint_final.pth)")
    group.add_argument("--mirroring", action="store_true", help="nnU-Net: test-time mirroring (up to 8x the cost)")
    group.add_argument("--tile-step-size", type=float, help="nnU-Net: tile step as a fraction of the patch (0.5)")
    group.add_argument("--network", help="state dict: unet, basicunet, swinunetr, segresnet, dynunet or unetr")
    group.add_argument("--network-params", help="state dict: the network's keyword arguments as JSON")
    group.add_argument("--trust-model-code", action="store_true",
                       help="the model's files may run code: a checkpoint that needs pickle, a MONAI bundle config "
                            "with $ expressions or _target_s other than MONAI's networks, transforms and inferers "
                            "(refused without it; docs/DEPLOYMENT.md, Security model)")
    group.add_argument("--labels", type=Path, help="label names: a text file (one per line), a JSON list, or a "
                                                    "sidecar JSON with labels, preprocessing and window")


def model_spec(args):
    """The model named on the command line, loaded by the stage (models.sources.load_model)."""
    from agg2exp_core.models.sources import ModelSpec

    params = json_object("--network-params", args.network_params) if args.network_params else None
    return ModelSpec(args.model, fold=args.fold, checkpoint_name=args.checkpoint_name, network=args.network,
                     network_params=params, labels=args.labels, mirroring=args.mirroring,
                     tile_step_size=args.tile_step_size, trust_code=args.trust_model_code)


def json_object(flag: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(flag, f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise InputError(flag, "must be a JSON object")
    return value


def comma_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def class_ids(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(c) for c in comma_list(text)]
    except ValueError:
        raise InputError("--classes", f"expected comma-separated class ids, got '{text}'") from None


EXECUTOR_NAMES = ("inprocess", "ray")


RAY_FLAGS = {"ray_address": "--ray-address", "cpus_per_case": "--cpus-per-case", "gpus_per_case": "--gpus-per-case",
             "ray_workers": "--ray-workers", "ray_retries": "--ray-retries"}


def add_executor(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("where cases are computed (docs/DEPLOYMENT.md)")
    g.add_argument("--executor", choices=EXECUTOR_NAMES, default="inprocess",
                   help="inprocess (default): this process; ray: Ray workers, each loading the model once")
    g.add_argument("--ray-address", help="auto or HOST:PORT of a running Ray cluster "
                                         "(default: start a local instance on 127.0.0.1, stop it at the end)")
    g.add_argument("--cpus-per-case", type=float, help="CPU cores per Ray worker, also its torch threads (default 1)")
    g.add_argument("--gpus-per-case", type=float, help="GPUs per Ray worker; 0.5 puts two workers on a GPU (default 0)")
    g.add_argument("--ray-workers", type=int, help="Ray worker processes (default: as many as the resources hold)")
    g.add_argument("--ray-retries", type=int, help="re-runs of a case whose worker process died (default 2)")


def add_inputs(parser: argparse.ArgumentParser, timeout: bool = True) -> None:
    """Where the manifest's files may lie, and how long one case may take."""
    from agg2exp_core.io.limits import DEFAULT_CASE_TIMEOUT_S

    parser.add_argument("--cohort-root", type=Path,
                        help="folder every manifest path must resolve into, symlinks followed "
                             "(default: the manifest's folder)")
    parser.add_argument("--allow-outside-root", action="store_true",
                        help="accept manifest paths outside the cohort root (absolute paths, symlinks out)")
    if timeout:
        parser.add_argument("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT_S, metavar="SECONDS",
                            help=f"end a case after this many seconds, record it as failed (stage timeout) and go "
                                 f"on; held back on reruns like a crash (default {DEFAULT_CASE_TIMEOUT_S:g}: far "
                                 "beyond a full CT case on CPU; 0: no limit)")


def executor_from(args):
    """The executor the options name; Ray options without ``--executor ray`` are an error."""
    given = {flag: getattr(args, key) for key, flag in RAY_FLAGS.items() if getattr(args, key) is not None}
    if args.executor == "inprocess":
        if given:
            raise InputError(next(iter(given)), "needs --executor ray")
        from agg2exp_core.pipeline.executors import InProcessExecutor

        return InProcessExecutor()
    from agg2exp_core.pipeline.ray_executor import RayConfig, RayExecutor

    defaults = RayConfig()
    return RayExecutor(RayConfig(
        address=args.ray_address, workers=args.ray_workers,
        cpus_per_case=defaults.cpus_per_case if args.cpus_per_case is None else args.cpus_per_case,
        gpus_per_case=defaults.gpus_per_case if args.gpus_per_case is None else args.gpus_per_case,
        max_retries=defaults.max_retries if args.ray_retries is None else args.ray_retries))


