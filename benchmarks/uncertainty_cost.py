"""Cost of the uncertainty features against the clean prediction, per case, side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/uncertainty_cost.py [--cases 6]

Loads the demo model and cohort (data/demo_unet.pt, data/demo/cohort), and for each case times
(CPU seconds, ``time.process_time``, one torch thread) the clean prediction, ``uncertainty_features`` on
it, and, for scale, the whole of precompute's per-case work for the demo's first run (VG, every class;
``process_case`` without the features).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agg2exp_core.io.images import load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.models import load_model
from agg2exp_core.models.uncertainty import TTASpec, flip_axes, uncertainty_features
from agg2exp_core.pipeline.precompute import process_case


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--cases", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.data / "demo_unet.pt", device="cpu")
    cohort = read_manifest(args.data / "demo" / "cohort" / "manifest.csv")
    spec = TTASpec()
    n_passes = len(spec.augmentations(flip_axes(model)))
    clean_s, tta_s, vg_s = [], [], []
    for row in cohort.to_dict("records")[:args.cases]:
        case = load_case(row, model.preprocessing, n_labels=model.n_classes)
        start = time.process_time()
        logits = model.predict(case.image)
        clean_s.append(time.process_time() - start)
        start = time.process_time()
        uncertainty_features(model, case.image, logits, case.spacing, spec)
        tta_s.append(time.process_time() - start)
        start = time.process_time()
        process_case(model, case, "vg", {}, range(model.n_classes))
        vg_s.append(time.process_time() - start)
        print(f"{row['case_id']}: shape {tuple(case.image.shape[1:])}, clean {clean_s[-1]:.3f} s, "
              f"uncertainty {tta_s[-1]:.3f} s, VG case {vg_s[-1]:.3f} s", flush=True)
    print(f"{n_passes} perturbed passes; mean CPU s/case: clean {np.mean(clean_s):.3f}, uncertainty "
          f"{np.mean(tta_s):.3f} ({np.mean(tta_s) / np.mean(clean_s):.1f}x the clean prediction), VG case "
          f"{np.mean(vg_s):.3f} (uncertainty adds {np.mean(tta_s) / np.mean(vg_s):.0%} to it)")


if __name__ == "__main__":
    main()
