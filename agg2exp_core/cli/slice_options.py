"""The ``analyze --slices`` options (the failure-slice search of ``analysis.slices``)."""
from __future__ import annotations

import argparse


def add_slice_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("failure slices", "subgroups on which the model's Dice drops (metadata "
                                                        "conditions and explanation clusters, BH-corrected)")
    group.add_argument("--slices", action="store_true",
                       help="search the failure slices of every class and over all classes (after expected Dice)")
    group.add_argument("--slice-min-support", type=int, default=8, metavar="N",
                       help="cases a slice holds, and leaves outside, at least (default 8)")
    group.add_argument("--slice-max-conditions", type=int, default=2, choices=(1, 2),
                       help="metadata conditions per slice (default 2: pairs of conditions on different fields)")
    group.add_argument("--slice-threshold", type=float, default=0.05, metavar="Q",
                       help="BH q-value below which a slice is reported (default 0.05)")
    group.add_argument("--slice-dice", choices=("auto", "labels", "expected"), default="auto",
                       help="score slices by true Dice (labels), expected Dice, or true Dice where labelled (auto)")
    group.add_argument("--slice-exclude-split", default="train", metavar="SPLIT",
                       help="leave the cases of this split out of the search: the model's training cases, whose "
                            "Dice is in-sample (default train; '' searches every case)")


def slice_config(args, kind: str):
    """The search's settings from the command line, or None without --slices."""
    if not args.slices:
        return None
    from agg2exp_core.analysis.slices import SliceConfig

    return SliceConfig(min_support=args.slice_min_support, max_conditions=args.slice_max_conditions,
                       threshold=args.slice_threshold, dice=args.slice_dice, kind=kind, seed=args.seed,
                       exclude_split=args.slice_exclude_split or None)
