"""Train the shortcut network and its control (issue #25 b) and write them to data/.

    OMP_NUM_THREADS=1 python benchmarks/train_shortcut_models.py [--iterations 400] [--out data]

Generates the known-answer cohort (``agg2exp_core.io.phantoms.shortcut``) in a temporary folder,
trains both networks with the project's own training (``models.train``, via
``pipeline.known_answers.train_known_answer_models``), and prints the training time, the
checkpoint size and the effusion Dice of each network on the marked and unmarked test cases.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this tree's agg2exp_core, not the installed one

from agg2exp_core.io.phantoms.shortcut import generate_shortcut_cohort  # noqa: E402
from agg2exp_core.pipeline.known_answers import KnownAnswerConfig, effusion_dice, train_known_answer_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=KnownAnswerConfig().iterations)
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=12)
    parser.add_argument("--out", default="data")
    args = parser.parse_args()
    config = KnownAnswerConfig(iterations=args.iterations)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_shortcut_cohort(Path(tmp) / "cohort", n_train=args.n_train, n_test=args.n_test)
        trained = train_known_answer_models(manifest, args.out, config, progress=True)
        dice = effusion_dice(manifest, {m: t["path"] for m, t in trained.items()})
    print(f"{'model':10s} {'train s':>8s} {'MB':>6s} {'Dice eff. marked':>17s} {'unmarked':>9s}")
    for model, t in trained.items():
        print(f"{model:10s} {t['seconds']:8.1f} {t['bytes'] / 1e6:6.2f} {dice[model]['marked']:17.3f} "
              f"{dice[model]['unmarked']:9.3f}   {t['path']}")


if __name__ == "__main__":
    main()
