"""Cost per case of Seg-Grad-CAM and Guided Backprop relative to VG on the demo's phantoms.

Loads the demo model (``data/demo_unet.pt``), generates phantoms of the demo's cohort
settings (``pipeline.demo.COHORT``: 64x48x48 at 6 mm) and times, per case, the call
precompute makes: ``explain(model, image, method, classes=all, mask=prediction)`` through
the model's own sliding window. Times are the best of ``--repeats`` interleaved rounds
(the machine may be shared) in wall and process-CPU seconds; ratios are to VG.

    OMP_NUM_THREADS=1 python benchmarks/gradcam_cost.py [--cases 3] [--repeats 3] [--threads 1] [--randomised]

``--randomised`` also prints, for the first case, how much each method's map changes when
every layer of the model is re-initialised (its own ``reset_parameters``, seed 0): the
median over the predicted classes of the Spearman correlation of |attribution| between the
trained and the randomised model. A method that explains the model should fall near 0;
Guided Backprop is expected to stay high (Adebayo et al. 2018). The product's sanity checks
(``agg2exp sanity``) are the full test; this is a quick look.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import copy

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agg2exp_core.attribution import explain  # noqa: E402
from agg2exp_core.io.images import load_case  # noqa: E402
from agg2exp_core.io.manifest import read_manifest  # noqa: E402
from agg2exp_core.io.phantoms import generate_cohort  # noqa: E402
from agg2exp_core.models import load_model  # noqa: E402
from agg2exp_core.pipeline.demo import COHORT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("vg", "gradcam", "guided_backprop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--randomised", action="store_true", help="also the fully randomised model's similarity")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(REPO / "data" / "demo_unet.pt", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        settings = {**COHORT, "n_reference": args.cases, "n_test": 0, "n_external": 0}
        manifest = generate_cohort(Path(tmp) / "cohort", **settings)
        rows = read_manifest(manifest).to_dict("records")
        cases = [load_case(row, model.preprocessing, n_labels=model.n_classes) for row in rows]
    print(f"demo model {model.network_config.get('name')}, window {model.window.roi_size if model.window else None}, "
          f"{model.n_classes} classes, {args.threads} thread(s), best of {args.repeats}")
    best = {m: [[float("inf"), float("inf")] for _ in cases] for m in METHODS}
    for r in range(args.repeats):
        for i, case in enumerate(cases):
            mask = model.predict(case.image).argmax(0)
            for m in METHODS[r % len(METHODS):] + METHODS[:r % len(METHODS)]:  # rotated: shared load hits all
                wall, cpu = time.perf_counter(), time.process_time()
                explain(model, case.image, m, mask=mask, device="cpu")
                best[m][i][0] = min(best[m][i][0], time.perf_counter() - wall)
                best[m][i][1] = min(best[m][i][1], time.process_time() - cpu)
    print(f"{'method':<16}{'wall s/case':>12}{'cpu s/case':>12}{'wall / VG':>11}{'cpu / VG':>10}")
    vg_wall = sum(t[0] for t in best["vg"]) / len(cases)
    vg_cpu = sum(t[1] for t in best["vg"]) / len(cases)
    for m in METHODS:
        wall = sum(t[0] for t in best[m]) / len(cases)
        cpu = sum(t[1] for t in best[m]) / len(cases)
        print(f"{m:<16}{wall:>12.2f}{cpu:>12.2f}{wall / vg_wall:>11.2f}{cpu / vg_cpu:>10.2f}")
    if args.randomised:
        randomised_similarity(model, cases[0])


def randomised_similarity(model, case) -> None:
    """Median Spearman of |map| (trained vs fully re-initialised model) over the predicted classes."""
    mask = model.predict(case.image).argmax(0)
    classes = sorted(int(c) for c in mask.unique())
    random_model = copy.deepcopy(model)
    torch.manual_seed(0)
    for module in random_model.network.modules():
        if hasattr(module, "reset_parameters") and module is not random_model.network:
            module.reset_parameters()
    image = case.image[0].numpy().astype(float)
    edges = np.sqrt(sum(ndimage.sobel(image, axis=a) ** 2 for a in range(3))).ravel()
    print(f"trained vs fully randomised model, case {case.case_id}, {len(classes)} predicted classes "
          "(median over classes, range); and |map| vs the CT's Sobel edge magnitude:")
    for m in METHODS:
        trained = explain(model, case.image, m, classes=classes, mask=mask, device="cpu").abs().numpy()
        random = explain(random_model, case.image, m, classes=classes, mask=mask, device="cpu").abs().numpy()
        rhos = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(trained, random)]
        edge = [spearmanr(a.ravel(), edges)[0] for a in trained]
        edge_random = [spearmanr(b.ravel(), edges)[0] for b in random]
        print(f"  {m:<16} trained~random {_summary(rhos)}   trained~edges {_summary(edge)}   "
              f"random~edges {_summary(edge_random)}")


def _summary(values) -> str:
    return f"{np.nanmedian(values):+.2f} ({np.nanmin(values):+.2f}..{np.nanmax(values):+.2f})"


if __name__ == "__main__":
    main()
