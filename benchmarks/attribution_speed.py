"""Speed of all-class gradient attributions vs a Captum per-class loop, and vs the floor.

One run prints, per method (VG, SmoothGrad, IG), side by side:

- ours: ``agg2exp_core.attribution.explain`` for every class at once;
- captum: ``Saliency`` / ``NoiseTunnel(Saliency)`` / ``IntegratedGradients`` called once
  per class on a wrapper module ``x -> [B, l]`` of class logits summed over the fixed
  predicted mask (what one writes with Captum for the aggregated function);
- floor: one forward plus one backward pass per (non-empty) class per batch of
  samples, measured directly with ``torch.autograd.grad`` on prepared inputs.

Both sides use the same fixed mask (the clean prediction), the same samples (the
SmoothGrad noise matches because Captum is re-seeded per class and draws its noise as
we do), the same Gauss-Legendre IG rule, and the same batch size. Times are the best of
``--repeats`` interleaved runs (the machine may be shared). ``max rel diff`` is
``max |ours - captum| / max |captum|`` over all classes and voxels.

    python benchmarks/attribution_speed.py [--shape 64 48 48] [--n 4] [--float64] [--threads 2]

On a machine shared with other jobs, ``--threads 1`` gives steadier numbers: two
OpenMP threads time-sliced against other processes wait on each other at every
barrier, which inflates wall and CPU time alike and erratically.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agg2exp_core.attribution import explain, ig_quadrature  # noqa: E402

N_CLASSES = 17


class AggregatedLogits(torch.nn.Module):
    """``[B,1,*S] -> [B,l]``: each class's logits summed over its fixed predicted mask."""

    def __init__(self, net: torch.nn.Module, labels: torch.Tensor, n_classes: int, dtype: torch.dtype):
        super().__init__()
        self.net = net
        self.register_buffer("onehot", torch.nn.functional.one_hot(labels, n_classes).movedim(-1, 0).to(dtype))

    def forward(self, x):
        return (self.net(x) * self.onehot).flatten(2).sum(-1)


def best_times(fns: list, repeats: int) -> tuple[list[float], list[float], list]:
    """Best wall-clock and best process-CPU seconds of each function, and its last result.

    The calls are interleaved (round r runs every function once, in rotated order) so
    that load from other processes on a shared machine hits all of them alike; CPU time
    (all threads of this process) is less sensitive to that load than wall time.
    """
    wall, cpu, out = [float("inf")] * len(fns), [float("inf")] * len(fns), [None] * len(fns)
    for r in range(repeats):
        for i in [(r + k) % len(fns) for k in range(len(fns))]:
            start, start_cpu = time.perf_counter(), time.process_time()
            out[i] = fns[i]()
            wall[i] = min(wall[i], time.perf_counter() - start)
            cpu[i] = min(cpu[i], time.process_time() - start_cpu)
    return wall, cpu, out


def floor_time(net, samples: list[torch.Tensor], cotangents: list[torch.Tensor], batch: int) -> None:
    """One forward and one backward per class for each batch of prepared samples."""
    for start in range(0, len(samples), batch):
        x = torch.stack(samples[start:start + batch]).requires_grad_(True)
        y = net(x)
        for t, cot in enumerate(cotangents):
            torch.autograd.grad(y, x, cot.expand_as(y), retain_graph=t < len(cotangents) - 1)


def captum_loop(method: str, wrapper, x, classes, n: int, batch: int, std: float, seed: int) -> torch.Tensor:
    """Per-class Captum attributions ``[k,*S]`` of the aggregated wrapper."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    rows = []
    for c in classes:
        if method == "vg":
            a = Saliency(wrapper).attribute(x, target=c, abs=False)
        elif method == "smoothgrad":
            torch.manual_seed(seed)  # the same noise for every class, as in ours
            a = NoiseTunnel(Saliency(wrapper)).attribute(
                x, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=batch, stdevs=std,
                target=c, abs=False)
        else:
            a = IntegratedGradients(wrapper).attribute(
                x, baselines=0.0, target=c, n_steps=n, method="gausslegendre", internal_batch_size=batch)
        rows.append(a[0, 0].detach())
    return torch.stack(rows)


def method_samples(method: str, x: torch.Tensor, n: int, sigma: float, seed: int) -> list[torch.Tensor]:
    """The inputs ``[1,*S]`` whose gradients each method needs (for the floor)."""
    if method == "vg":
        return [x]
    if method == "smoothgrad":
        std = torch.tensor(sigma * float(x.max() - x.min()), dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        return [x + (torch.randn(x.shape, generator=gen) * std).to(x.dtype) for _ in range(n)]
    return [a * x for a in ig_quadrature("gausslegendre", n)[0]]


def main(argv=None) -> None:
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 48, 48], help="volume X Y Z")
    parser.add_argument("--n", type=int, default=4, help="SmoothGrad samples and IG steps")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per forward pass (default: n)")
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--float64", action="store_true", help="run everything in float64")
    parser.add_argument("--methods", nargs="+", default=["vg", "smoothgrad", "ig"])
    args = parser.parse_args(argv)

    from monai.networks.nets import UNet

    torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.float64 else torch.float32
    batch = args.batch_size or args.n
    torch.manual_seed(args.seed)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=(16, 32, 64, 128),
               strides=(2, 2, 2), num_res_units=2).to(dtype).eval()
    image = torch.rand((1,) + tuple(args.shape), generator=torch.Generator().manual_seed(args.seed), dtype=dtype)
    with torch.no_grad():
        labels = net(image[None])[0].argmax(0)
    classes = labels.unique().tolist()  # empty classes cost nothing in ours; skip them in Captum too
    wrapper = AggregatedLogits(net, labels, N_CLASSES, dtype).eval()
    cotangents = [torch.nn.functional.one_hot(torch.tensor(c), N_CLASSES).to(dtype).view(1, -1, 1, 1, 1)
                  * (labels == c).to(dtype) for c in classes]
    std = args.sigma * float(image.max() - image.min())

    # Warm-up (oneDNN picks and caches kernels per shape on first use): batch 1 and n.
    for warm in ([image], [image] * batch):
        floor_time(net, warm, cotangents[:1], len(warm))
    print(f"MONAI UNet(16,32,64,128), {N_CLASSES} classes ({len(classes)} non-empty), volume "
          f"{'x'.join(map(str, args.shape))}, {str(dtype).split('.')[-1]}, n={args.n}, batch {batch}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    header = (f"{'method':<11}{'ours [s]':>9}{'captum [s]':>11}{'floor [s]':>10}{'speed-up':>10}{'(cpu)':>7}"
              f"{'ours/floor':>11}{'(cpu)':>7}{'max rel diff':>13}")
    print(header)
    print("-" * len(header))
    for method in args.methods:
        params = {"vg": {}, "smoothgrad": {"n_samples": args.n, "sigma": args.sigma, "seed": args.seed},
                  "ig": {"steps": args.n, "baseline": 0.0}}[method]
        samples = method_samples(method, image, args.n, args.sigma, args.seed)
        (ours_s, captum_s, floor_s), (ours_c, captum_c, floor_c), (ours, ref, _) = best_times([
            lambda: explain(net, image, method, classes=classes, mask=labels, batch_size=batch,
                            device="cpu", **params),
            lambda: captum_loop(method, wrapper, image[None], classes, args.n, batch, std, args.seed),
            lambda: floor_time(net, samples, cotangents, batch),
        ], args.repeats)
        rel = float((ours - ref).abs().max() / ref.abs().max())
        print(f"{method:<11}{ours_s:>9.2f}{captum_s:>11.2f}{floor_s:>10.2f}{captum_s / ours_s:>9.2f}x"
              f"{captum_c / ours_c:>6.2f}x{ours_s / floor_s:>11.2f}{ours_c / floor_c:>7.2f}{rel:>13.1e}", flush=True)
    print("times: best wall-clock seconds; ratios by wall clock and by process CPU time (cpu)")
    print("goals: speed-up >= 1.5x, ours/floor <= 1.15, max rel diff <= 1e-5")


if __name__ == "__main__":
    main()
