"""Causal regional effects: speed of the patch cache against the naive sliding window, same values.

The same class x region ATE matrix computed with
  - ``cached``: the KernelSHAP game's sliding-window engine: the clean windows are computed
    once, an intervention on region r recomputes only the windows that overlap r (ours, default);
  - ``full``:   MONAI ``sliding_window_inference`` on the whole intervened volume for every
    (region, donor) (the naive reference),
for a constant donor (air) and for donor images (Monte-Carlo), on a MONAI UNet (random
weights unless ``--checkpoint``). All classes come from the same passes. The values must
agree to 1e-6 (relative to the largest |ATE|); the goal is >= 3x in CPU time.

    python benchmarks/causal_speed.py [--checkpoint ckpt.pt] [--shape 64 48 48] [--roi 24] [--cubes 4]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agg2exp_core.attribution.causal import causal_run  # noqa: E402


def phantom(shape, seed):
    """A body ellipsoid with organ-like blobs, scaled to [0, 1]: ``[1, *S]``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    body = (grid ** 2).sum(axis=0) < 0.9
    image = np.where(body, 0.52, 0.0) + rng.normal(0, 0.01, shape)
    for k in range(5):
        centre = rng.uniform(-0.5, 0.5, 3)
        blob = sum((g - c) ** 2 for g, c in zip(grid, centre)) < rng.uniform(0.05, 0.1)
        image[blob & body] = 0.5 + 0.05 * k
    return torch.from_numpy(np.clip(image, 0, 1).astype(np.float32))[None]


def network(checkpoint: str | None, n_classes: int):
    if checkpoint:
        from agg2exp_core.models import load_checkpoint
        return load_checkpoint(checkpoint, device="cpu").network.eval(), f"checkpoint {checkpoint}"
    from monai.networks.nets import UNet
    torch.manual_seed(0)
    net = UNet(3, 1, n_classes, (8, 16, 32), (2, 2), num_res_units=1).eval()
    return net, f"MONAI UNet(3,1,{n_classes},(8,16,32),(2,2),num_res_units=1), random weights"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 48, 48])
    parser.add_argument("--roi", type=int, default=24)
    parser.add_argument("--cubes", type=int, default=4, help="regions: a cubes partition, n per axis")
    parser.add_argument("--donors", type=int, default=2)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, described = network(args.checkpoint, args.classes)
    image = phantom(tuple(args.shape), 0)
    donors = [phantom(tuple(args.shape), 1 + k) for k in range(args.donors)]
    common = dict(partition="cubes", n_per_axis=args.cubes, roi_size=(args.roi,) * 3, overlap=0.25,
                  mode="gaussian", sw_batch_size=4, seed=0, tolerance=0.0)
    settings = {"constant": dict(donor="constant"),
                "images": dict(donor="images", donors=donors, n_samples=args.donors)}
    print(f"{described}; volume {tuple(args.shape)}, window {args.roi}^3 overlap 0.25, "
          f"{args.cubes ** 3} cube regions, {args.classes} classes from the same passes, "
          f"{args.threads} thread(s)")
    print("cpu s: process CPU time (the machine is shared: wall time is inflated by other jobs); "
          "patches: network window evaluations for interventions + the clean cache")
    print(f"{'donor':9s}{'mode':8s}{'interv.':>8s}{'wall s':>9s}{'cpu s':>9s}{'patches':>9s}"
          f"{'speedup':>9s}{'max|dATE|':>11s}{'rel.':>9s}")
    ok = True
    for donor, extra in settings.items():
        results = {}
        for mode in ("full", "cached"):
            results[mode] = timed(lambda: causal_run(net, image, None, inference=mode, **common, **extra))
        ref, _, ref_cpu = results["full"]
        scale = max(np.abs(ref.ate).max(), 1e-12)
        for mode, (res, wall, cpu) in results.items():
            diff = float(np.abs(res.ate - ref.ate).max())
            patches = res.stats.patch_misses + res.stats.cache_patches
            print(f"{donor:9s}{mode:8s}{res.stats.coalitions:8d}{wall:9.1f}{cpu:9.1f}{patches:9d}"
                  f"{ref_cpu / cpu:8.1f}x{diff:11.2e}{diff / scale:9.1e}")
        cached = results["cached"]
        ok &= np.abs(cached[0].ate - ref.ate).max() / scale <= 1e-6 and ref_cpu / cached[2] >= 3.0
    print("goal (values equal to 1e-6 relative, >= 3x faster in CPU time):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
