"""KernelSHAP benchmark: speed of the ROI-restricted patch cache, accuracy of the estimator.

Part 1 (speed): the same KernelSHAP explanation computed with
  - ``cached``: ROI-restricted inference with cached baseline patches (ours, default),
  - ``roi``:    ROI-restricted inference, every overlapping patch recomputed,
  - ``full``:   MONAI ``sliding_window_inference`` on the whole perturbed volume for every
                coalition (the naive reference),
for semantic and hybrid units on a MONAI UNet (random weights unless ``--checkpoint``).
Values must agree (max |diff|), and the cache hit ratio and patch counts are shown.

Part 2 (accuracy): on a game with few units (exact Shapley values by enumerating all
``2**M`` coalitions once into a lookup table), the error of our estimator and of
``shap.KernelExplainer`` at equal numbers of coalition evaluations.

    python benchmarks/kernelshap_speed.py [--checkpoint ckpt.pt] [--shape 64 48 48] [--roi 32]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agg2exp_core.attribution.kernelshap import build_game, kernelshap_run, shapley_from_game  # noqa: E402


# ---------------------------------------------------------------- inputs
def phantom(shape, seed=0):
    """A body ellipsoid with six organ blobs: scaled image ``[1, *S]`` and organ labels ``[*S]``.

    Organ 1 (the explained ROI) sits near the low-x end, across the middle of y and z, so
    that on 64x48x48 with 32^3 patches it overlaps 4 of the 12 sliding-window patches.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    body = (grid ** 2).sum(axis=0) < 0.95
    image = np.where(body, 0.52, 0.0) + rng.normal(0, 0.01, shape)
    labels = np.zeros(shape, np.int64)
    organs = [((-0.62, -0.06, -0.06), 0.3), ((-0.1, 0.5, 0.4), 0.3), ((0.15, -0.2, 0.1), 0.3),
              ((0.6, -0.3, 0.3), 0.25), ((0.55, 0.35, -0.35), 0.25), ((0.0, -0.5, -0.55), 0.2)]
    for k, (centre, radius) in enumerate(organs, start=1):
        blob = sum((g - c) ** 2 for g, c in zip(grid, centre)) < radius ** 2
        labels[blob & body] = k
        image[blob & body] = 0.5 + 0.04 * k
    return torch.from_numpy(image.astype(np.float32))[None], labels


def network(checkpoint: str | None):
    if checkpoint:
        from agg2exp_core.models import load_checkpoint
        seg = load_checkpoint(checkpoint, device="cpu")
        return seg.network.eval(), f"checkpoint {checkpoint}"
    from monai.networks.nets import UNet
    torch.manual_seed(0)
    net = UNet(3, 1, 17, (16, 32, 64, 128), (2, 2, 2), num_res_units=2).eval()
    return net, "MONAI UNet(3,1,17,(16,32,64,128),(2,2,2),num_res_units=2), random weights"


# ---------------------------------------------------------------- part 1
def speed(net, image, labels, args):
    roi_mask = labels == 1  # the ROI: organ 1, overlapping 4 of the 12 patches
    with torch.no_grad():
        from monai.inferers import sliding_window_inference
        pred = sliding_window_inference(image[None], args.roi, 4, net, overlap=0.25, mode="gaussian")[0].argmax(0)
    target = int(np.bincount(pred.numpy()[roi_mask]).argmax())  # most predicted class inside the ROI
    common = dict(roi=roi_mask, value="logit", labels=labels, spacing=(1.5, 1.5, 1.5), scale_mm=args.scale_mm,
                  n_coalitions=args.n, seed=0, roi_size=(args.roi,) * 3, overlap=0.25, mode="gaussian",
                  sw_batch_size=4)
    print(f"volume {tuple(image.shape[1:])}, patch {args.roi}^3, overlap 0.25, value 'logit' in the ROI "
          f"(organ 1, {int(roi_mask.sum())} voxels), class {target}, {args.n} coalitions")
    print(f"wall s / cpu s: best of {args.timing_repeats} interleaved runs, wall clock / process CPU time "
          "(shared machine: other jobs inflate both); speedup: in CPU time against full; patches: network "
          "patch evaluations for coalitions + cache seeding (the clean prediction pass, 1 full sliding "
          "window, is common to all modes and excluded)")
    print(f"{'units':9s}{'M':>5s} {'mode':7s}{'wall s':>8s}{'cpu s':>8s}{'patches':>10s}{'hit ratio':>10s}"
          f"{'speedup':>9s}{'max|dphi|':>11s}{'rel.':>9s}")
    for units in ("semantic", "hybrid"):
        runs = {mode: [] for mode in ("full", "roi", "cached", "cached0")}
        for _ in range(args.timing_repeats):  # interleaved, best of: the machine is shared
            for mode in runs:
                extra = {"inference": "cached", "cache_mb": 0} if mode == "cached0" else {"inference": mode}
                wall, cpu = time.perf_counter(), time.process_time()
                res = kernelshap_run(net, image, [target], partition=units, **extra, **common)
                runs[mode].append((res, time.perf_counter() - wall, time.process_time() - cpu))
        results = {mode: (r[0][0], min(x[1] for x in r), min(x[2] for x in r)) for mode, r in runs.items()}
        base_res, _, base_cpu = results["full"]
        scale = max(np.abs(base_res.values).max(), 1e-12)
        for mode, (res, wall, cpu) in results.items():
            diff = np.abs(res.values - base_res.values).max()
            hit = f"{res.stats.hit_ratio:.1%}" if mode.startswith("cached") else "-"
            patches = res.stats.patch_misses + res.stats.cache_patches
            print(f"{units:9s}{res.values.shape[1]:5d} {mode:7s}{wall:8.1f}{cpu:8.1f}{patches:10d}{hit:>10s}"
                  f"{base_cpu / cpu:8.1f}x{diff:11.2e}{diff / scale:9.1e}")
    print("modes: full = MONAI sliding window on the whole perturbed volume per coalition (naive); "
          "roi = only the patches overlapping the ROI box; cached = roi + baseline cache + memo of "
          "recomputed patches by kept-unit pattern (default); cached0 = baseline cache only (paper)")


# ---------------------------------------------------------------- part 2
def accuracy(net, image, labels, args):
    m = args.exact_units
    crop = tuple(slice(0, s) for s in (32, 32, 32))
    img = image[(slice(None), *crop)].contiguous()
    part = np.zeros(img.shape[1:], np.int64)
    cuts = np.array_split(np.arange(32), m)  # m slabs along the first axis
    for u, idx in enumerate(cuts):
        part[idx] = u
    game = build_game(net, img, None, partition=part, value="logit", batch_size=8)
    classes = np.bincount(game.prediction.ravel(), minlength=17).argsort()[::-1][:3]
    game = build_game(net, img, [int(c) for c in classes], partition=part, value="logit", batch_size=8)
    start = time.perf_counter()
    masks = np.array(list(np.ndindex(*(2,) * m)), bool)       # all 2^M coalitions
    table = game.values(masks)
    seconds = time.perf_counter() - start
    index = {r.tobytes(): i for i, r in enumerate(masks)}
    calls = {"n": 0}

    def lookup(keep):
        keep = np.asarray(keep) > 0.5
        calls["n"] += len(keep)
        return table[[index[r.tobytes()] for r in keep]]

    exact = exact_shapley(table, masks, index, m)
    print(f"\n{m} units (slabs of a 32^3 crop), classes {classes.tolist()}, exact values from all "
          f"{2 ** m} coalitions ({seconds:.0f} s); error vs exact, mean over {args.repeats} seeds")
    print(f"{'budget':>7s}  {'ours rel.L2':>12s} {'shap rel.L2':>12s}  {'ours max':>10s} {'shap max':>10s}"
          f"  {'evals ours/shap':>16s}")
    import shap
    norm = np.linalg.norm(exact)
    for budget in [int(b) for b in args.budgets.split(",")]:
        errs = {"ours": [], "shap": []}
        maxs = {"ours": [], "shap": []}
        evals = {}
        for r in range(args.repeats):
            calls["n"] = 0
            phi, _ = shapley_from_game(lookup, m, budget, seed=r)
            evals["ours"] = calls["n"]
            errs["ours"].append(np.linalg.norm(phi - exact) / norm)
            maxs["ours"].append(np.abs(phi - exact).max())
            calls["n"] = 0  # shap's own evaluations, its initial call on the background included
            np.random.seed(r)
            explainer = shap.KernelExplainer(lookup, np.zeros((1, m)))
            sv = explainer.shap_values(np.ones((1, m)), nsamples=budget - 2, silent=True)
            evals["shap"] = calls["n"]
            sv = np.asarray(sv)[0].T if np.asarray(sv).ndim == 3 else np.stack([s[0] for s in sv])
            errs["shap"].append(np.linalg.norm(sv - exact) / norm)
            maxs["shap"].append(np.abs(sv - exact).max())
        print(f"{budget:7d}  {np.mean(errs['ours']):12.2e} {np.mean(errs['shap']):12.2e}  "
              f"{np.mean(maxs['ours']):10.2e} {np.mean(maxs['shap']):10.2e}  "
              f"{evals['ours']:>7d}/{evals['shap']:<7d}")


def exact_shapley(table, masks, index, m):
    phi = np.zeros((table.shape[1], m))
    for row in masks:
        s = int(row.sum())
        for i in np.flatnonzero(~row):
            w = math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m)
            with_i = row.copy()
            with_i[i] = True
            phi[:, i] += w * (table[index[with_i.tobytes()]] - table[index[row.tobytes()]])
    return phi


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="a checkpoint of agg2exp_core.models (default: random UNet)")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 48, 48))
    p.add_argument("--roi", type=int, default=32, help="sliding-window patch edge (voxels)")
    p.add_argument("--n", type=int, default=32, help="coalitions per explanation in part 1")
    p.add_argument("--scale-mm", type=float, default=16.0, help="FCC scale of the hybrid units")
    p.add_argument("--exact-units", type=int, default=9, help="units of the accuracy game (2^M evaluations)")
    p.add_argument("--budgets", default="16,32,64,128,256")
    p.add_argument("--repeats", type=int, default=10, help="seeds per budget in part 2")
    p.add_argument("--timing-repeats", type=int, default=3, help="runs per mode in part 1 (best is shown)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared machine, 2 threads spin-wait and time erratically)")
    p.add_argument("--parts", default="speed,accuracy")
    args = p.parse_args()
    warnings.filterwarnings("ignore")  # shap's LARS convergence chatter
    torch.set_num_threads(args.threads)
    net, what = network(args.checkpoint)
    image, labels = phantom(tuple(args.shape))
    print(f"{what}; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    if "speed" in args.parts:
        speed(net, image, labels, args)
    if "accuracy" in args.parts:
        accuracy(net, image, labels, args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
