"""``python -m agg2exp_core SUBCOMMAND``: one subcommand per stage of the pipeline.

Bad input ends with one line on stderr naming the file or parameter and the problem,
and exit status 2; a run with failed cases exits 1.
"""
from __future__ import annotations

import argparse
import sys

import torch

from agg2exp_core import analysis, demo, evaluation, importer, phantoms, precompute, train
from agg2exp_core.errors import InputError

STAGES = (phantoms, train, precompute, analysis, evaluation, importer, demo)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one stderr line naming the parameter (exit 2), like bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m agg2exp_core",
                           description="Agg2Exp Studio compute core: explain a 3-D segmentation model over a cohort.")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for stage in STAGES:
        stage.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed cases are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
