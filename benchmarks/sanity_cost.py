"""The cost of the sanity checks against the explanation they check, in CPU seconds of one thread.

    OMP_NUM_THREADS=1 python benchmarks/sanity_cost.py MANIFEST MODEL [CASE_ID]

On one case of a cohort (default the manifest's first): the model's VG explanation of every class (what a
VG precompute run computes per case), then ``run_sanity_checks`` with VG and with SmoothGrad (n = 4) at
the demo's settings (three classes; 2 and 1 cascading depths) and at the command's defaults (every class,
3 depths). Prints each cost and its ratio to the all-class VG explanation.
"""
from __future__ import annotations

import sys
import time

import torch

from agg2exp_core.analysis.sanity import SanityConfig, run_sanity_checks
from agg2exp_core.attribution.registry import explain
from agg2exp_core.io.images import load_case
from agg2exp_core.io.manifest import read_manifest
from agg2exp_core.models.sources import load_model
from agg2exp_core.pipeline.sanity import DEMO_CLASSES

SMOOTHGRAD = {"n_samples": 4, "sigma": 0.1, "seed": 0}


def cpu(fn):
    started = time.process_time()
    value = fn()
    return time.process_time() - started, value


def main(manifest: str, model_path: str, case_id: str | None = None) -> None:
    torch.set_num_threads(1)
    model = load_model(model_path, device="cpu")
    frame = read_manifest(manifest)
    row = (frame[frame.case_id.astype(str) == case_id] if case_id else frame).iloc[0].to_dict()
    case = load_case(row, model.preprocessing, n_labels=model.n_classes)
    mask = model.predict(case.image).argmax(0)
    every = list(range(model.n_classes))
    base, _ = cpu(lambda: explain(model, case.image, "vg", classes=every, mask=mask, device="cpu"))
    print(f"case {row['case_id']}: VG of all {len(every)} classes {base:.1f} s CPU (one case of a VG run)")
    demo = [model.label_names.index(n) for n in DEMO_CLASSES]
    for label, method, params, classes, steps in (
            ("demo VG (3 classes, 2 depths)", "vg", {}, demo, 2),
            ("demo SmoothGrad n=4 (3 classes, 1 depth)", "smoothgrad", SMOOTHGRAD, demo, 1),
            ("default VG (all classes, 3 depths)", "vg", {}, every, 3)):
        seconds, rows = cpu(lambda: run_sanity_checks(model, case.image, classes, method, params,
                                                      SanityConfig(steps=steps), rois=case.rois, mask=mask))
        print(f"{label}: {seconds:.1f} s CPU = {seconds / base:.1f}x the all-class VG explanation "
              f"({len(rows.attrs['layers'])} layers)")


if __name__ == "__main__":
    main(*sys.argv[1:])
