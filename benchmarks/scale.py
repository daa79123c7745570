"""All-class gradients at paper-like sizes: time, agreement and memory against per-class autograd.

The paper's geometry is a ~1.5 mm thorax of about 300x300x250 voxels explained through
96^3 sliding windows (overlap 0.25: 64 windows). ``--scale s`` keeps that geometry in
millimetres and in windows (volume, window and voxel size all scaled by s), so the
windows hold the same anatomy and the same classes as at full size; the default
s = 1/3 (100x100x83 voxels of 4.5 mm, 32^3 windows, 64 windows) runs in minutes on a CPU.

One run prints, side by side:

- ours: ``explain`` of VG and SmoothGrad for all l classes at once, through the sliding
  window (one forward pass per window, one backward pass per class the window holds);
- baseline: autograd through MONAI's ``sliding_window_inference``, one class at a time
  (all windows forward and backward per class), timed on ``--baseline-classes`` classes
  and extrapolated to l (its cost does not depend on the class: it is said so in the
  output); max rel. diff = max |ours - baseline| / max |baseline| over those classes;
- before: ours as of ``--before REV`` (the code before the optimisation), from git;
- peak RSS of all-class VG on ``--rss-sizes`` cubes (128 and 256 voxels), in memory and
  streamed to a memory-mapped .npy (``explain(..., out=...)``, automatic above
  ``attribution.sinks.STREAM_ABOVE_BYTES``);
- the error of ``--autocast`` (bf16 on CPU or CUDA, fp16 on CUDA) against float32.

Every configuration runs in its own child process (one thread, ``OMP_NUM_THREADS=1``),
so peak RSS (VmHWM, reset after the inputs are loaded) does not mix between them. The
mask is the phantom's ground truth (what a well-trained model predicts); weights are
the demo UNet's architecture with seeded random weights (time and memory do not depend
on the weights).

    python benchmarks/scale.py [--scale 0.333] [--n-samples 2] [--baseline-classes 3]
        [--rss-sizes 128 256] [--rss-roi 64] [--before 6ab509b] [--device cpu|cuda]
        [--network unet|swinunetr] [--autocast bf16|fp16|none]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAPER = {"shape": (300, 300, 250), "spacing": 1.5, "roi": 96}
THORAX_FOV_MM = 450.0
NETWORKS = {"unet": {"name": "unet"}, "swinunetr": {"name": "swinunetr", "params": {"feature_size": 48}}}


# ----------------------------------------------------------------------------- child side
def _vm(key: str) -> float:
    """A /proc/self/status field in MB (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, spec["code"])
    from agg2exp_core.models.inference import WindowSpec
    from agg2exp_core.models.networks import build_network

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    net = build_network(NETWORKS[spec["network"]], spec["n_classes"]).eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(np.load(spec["x"]))
    mask = torch.from_numpy(np.load(spec["mask"]).astype(np.int64))
    window = WindowSpec(tuple(spec["roi"]), overlap=spec["overlap"])
    if spec.get("stream") == "never":  # force the in-memory sink (the code before streaming has none)
        from agg2exp_core.attribution import sinks
        sinks.STREAM_ABOVE_BYTES = float("inf")
    rss_start = _vm("VmRSS")
    _reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, start_cpu = time.perf_counter(), time.process_time()
    if spec["task"] == "ours":
        result = _ours(spec, net, x, mask, window, device)
    else:
        result = _baseline(spec, net, x, mask, window, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    out = {"seconds": seconds, "cpu": cpu, "peak_mb": _vm("VmHWM"), "start_mb": rss_start,
           "windows": len(window.geometry(x.shape[1:]).slices),
           "result_mb": 4 * result.numel() / 2**20}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if spec.get("save"):
        np.save(spec["save"], result.float().numpy())
    return out


def _ours(spec, net, x, mask, window, device):
    from agg2exp_core.attribution.gradients import explain_gradients

    params = {"mask": mask, "window": window, "device": str(device)}
    if spec["method"] == "smoothgrad":
        params.update(n_samples=spec["n_samples"], sigma=0.1, seed=0)
    if spec.get("autocast"):
        params["autocast"] = spec["autocast"]
    if spec.get("stream") == "file":
        params["out"] = spec["out"]
    return explain_gradients(net, x, spec["method"], **params)


def _baseline(spec, net, x, mask, window, device):
    """Per-class autograd through MONAI's sliding_window_inference (the whole volume's graph)."""
    import torch
    from monai.inferers import sliding_window_inference

    from agg2exp_core.attribution.gradients import noisy_samples

    x = x.to(device)
    samples = [(x, 1.0)] if spec["method"] == "vg" else list(noisy_samples(x, spec["n_samples"], 0.1, 0))
    rows = []
    for c in spec["classes"]:
        weight = (mask == c).to(device=device, dtype=x.dtype)
        total = torch.zeros_like(x[0])
        for sample, a in samples:
            leaf = sample[None].clone().requires_grad_(True)
            with torch.enable_grad():
                fused = sliding_window_inference(leaf, window.roi_size, 1, net, overlap=window.overlap,
                                                 mode=window.mode, sigma_scale=window.sigma_scale)
                (grad,) = torch.autograd.grad((fused[0, c] * weight).sum(), leaf)
            total += a * grad[0, 0]
        rows.append(total.cpu())
    return torch.stack(rows)


# ----------------------------------------------------------------------------- parent side
def run_child(spec: dict, code: Path, may_fail: bool = False) -> dict | None:
    """One configuration in a fresh process; ``may_fail``: None (and its last error line) instead
    of stopping, e.g. for the per-class baseline whose whole-volume graph may not fit a GPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({**spec, "code": str(code)})],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        if may_fail:
            print(f"({spec['task']} {spec.get('method')} failed: {proc.stderr.strip().splitlines()[-1][:300]})")
            return None
        raise SystemExit(f"child {spec['task']} {spec.get('method')} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def phantom_inputs(folder: Path, name: str, shape, spacing: float) -> dict:
    """Scaled CT ``[1,*S]`` and the ground-truth label map of a phantom, saved for the children."""
    from agg2exp_core.io.phantoms import make_phantom

    p = make_phantom(0, "M", 60, shape=tuple(shape), spacing=(spacing,) * 3)
    x = ((np.clip(p.hu, -1024, 1024) + 1024) / 2048).astype(np.float32)[None]
    paths = {"x": str(folder / f"{name}_x.npy"), "mask": str(folder / f"{name}_mask.npy")}
    np.save(paths["x"], x)
    np.save(paths["mask"], p.labels.astype(np.int16))
    return paths


def old_code(rev: str, folder: Path) -> Path | None:
    """The package as of ``rev`` (git archive), or None when git cannot give it."""
    target = folder / f"before-{rev}"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "agg2exp_core"], capture_output=True)
    if archive.returncode != 0:
        print(f"(no 'before' run: git archive {rev} failed: {archive.stderr.decode().strip()[:200]})")
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def max_rel_diff(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=float, default=1 / 3,
                    help="of the paper's geometry (1 = 300x300x250, 96^3), snapped to windows of 16k voxels")
    ap.add_argument("--n-samples", type=int, default=2, help="SmoothGrad samples (the paper: 20)")
    ap.add_argument("--baseline-classes", type=int, default=3, help="classes timed for the per-class baseline")
    ap.add_argument("--rss-sizes", type=int, nargs="*", default=[128, 256])
    ap.add_argument("--rss-roi", type=int, default=64, help="window of the RSS runs (overlap 0: peak does not "
                                                            "depend on the number of windows)")
    ap.add_argument("--before", default="6ab509b", help="git revision of the code before the optimisation ('' = skip)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--network", choices=sorted(NETWORKS), default="unet")
    ap.add_argument("--autocast", default="bf16", help="bf16 | fp16 (CUDA) | none")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    sys.path.insert(0, str(REPO))
    from agg2exp_core.attribution import sinks
    from agg2exp_core.labels import THORAX_LABELS

    n_classes = len(THORAX_LABELS)
    roi = max(16, 16 * round(PAPER["roi"] * args.scale / 16))  # UNet / SwinUNETR need multiples of 16 / 32
    scale = roi / PAPER["roi"]                                 # snapped, so that the window count is the paper's
    shape, spacing = [round(s * scale) for s in PAPER["shape"]], PAPER["spacing"] / scale
    print(f"load (uptime): {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on "
          f"{os.cpu_count()} cores; 1 thread per run; device {args.device}; network {args.network}")
    with tempfile.TemporaryDirectory(prefix="agg2exp-scale-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        inputs = phantom_inputs(tmp, "main", shape, spacing)
        base = {"n_classes": n_classes, "roi": [roi] * 3, "overlap": 0.25, "device": args.device,
                "network": args.network, "n_samples": args.n_samples, **inputs}
        mask = np.load(inputs["mask"])
        present = [c for c in range(n_classes) if (mask == c).any()]
        picks = [present[i] for i in np.linspace(0, len(present) - 1, args.baseline_classes).round().astype(int)]
        print(f"geometry: {shape} voxels of {spacing:.2f} mm, windows {roi}^3 overlap 0.25, {n_classes} classes "
              f"(scale {scale:.3f} of the paper's 300x300x250 / 96^3); baseline timed on classes {picks} "
              "and extrapolated to all classes")
        rows = []
        for method in ("vg", "smoothgrad"):
            ours = run_child({**base, "task": "ours", "method": method, "save": str(tmp / f"ours_{method}.npy")}, REPO)
            ref = run_child({**base, "task": "baseline", "method": method, "classes": picks,
                             "save": str(tmp / f"base_{method}.npy")}, REPO, may_fail=True) if picks else None
            if ref is None:
                print(f"{method}: ours {ours['seconds']:.1f} s (cpu {ours['cpu']:.1f} s), peak RSS "
                      f"{ours['peak_mb']:.0f} MB{_gpu(ours)}; no baseline")
                continue
            diff = max_rel_diff(np.load(tmp / f"ours_{method}.npy")[picks], np.load(tmp / f"base_{method}.npy"))
            rows.append((method, ours, ref["seconds"] / len(picks), ref, diff))
        print("\nwall seconds (cpu seconds of the process: steadier on a shared machine)")
        print(f"{'method':<11}{'windows':>8}{'ours s':>15}{'baseline s/class':>18}{'baseline x l':>16}"
              f"{'ratio wall/cpu':>16}{'max rel diff':>14}{'ours RSS MB':>13}{'base RSS MB':>13}")
        for method, ours, per_class, ref, diff in rows:
            label = method if method == "vg" else f"sg (n={args.n_samples})"
            cpu_class = ref["cpu"] / len(picks)
            print(f"{label:<11}{ours['windows']:>8}{ours['seconds']:>8.1f} ({ours['cpu']:>4.0f}){per_class:>10.1f} "
                  f"({cpu_class:>5.1f}){per_class * n_classes:>9.0f} ({cpu_class * n_classes:>4.0f})"
                  f"{per_class * n_classes / ours['seconds']:>8.2f}x/{cpu_class * n_classes / ours['cpu']:.2f}x"
                  f"{diff:>12.1e}{ours['peak_mb']:>13.0f}{ref['peak_mb']:>13.0f}{_gpu(ours)}{_gpu(ref)}")
        if args.before:
            code = old_code(args.before, tmp)
            if code is not None:
                before = run_child({**base, "task": "ours", "method": "vg"}, code)
                after = rows[0][1]
                print(f"\nVG before ({args.before}) vs after: {before['seconds']:.1f} s / {after['seconds']:.1f} s "
                      f"(cpu {before['cpu']:.1f} / {after['cpu']:.1f} s), peak RSS {before['peak_mb']:.0f} / "
                      f"{after['peak_mb']:.0f} MB")
        autocast_check(args, base, tmp, roi)
        rss_table(args, tmp, n_classes, sinks.STREAM_ABOVE_BYTES)
        print(f"\ntotal {time.perf_counter() - started:.0f} s; load now {os.getloadavg()[0]:.2f}")


def _gpu(result: dict) -> str:
    return f" (GPU peak {result['gpu_peak_mb']:.0f} MB)" if "gpu_peak_mb" in result else ""


def autocast_check(args, base: dict, tmp: Path, roi: int) -> None:
    """Error of the autocast path against float32 (on the CPU a crop of 2x2x2 windows: CPUs
    without bf16 units run it an order of magnitude slower than float32)."""
    if args.autocast in ("", "none"):
        return
    spec = dict(base)
    if args.device == "cpu":
        side = 2 * roi - roi // 4
        x, mask = np.load(base["x"]), np.load(base["mask"])
        lo = [max((s - side) // 2, 0) for s in mask.shape]
        crop = tuple(slice(a, a + side) for a in lo)
        np.save(tmp / "crop_x.npy", np.ascontiguousarray(x[(slice(None), *crop)]))
        np.save(tmp / "crop_mask.npy", np.ascontiguousarray(mask[crop]))
        spec.update(x=str(tmp / "crop_x.npy"), mask=str(tmp / "crop_mask.npy"))
    f32 = run_child({**spec, "task": "ours", "method": "vg", "save": str(tmp / "f32.npy")}, REPO)
    low = run_child({**spec, "task": "ours", "method": "vg", "autocast": args.autocast,
                     "save": str(tmp / "low.npy")}, REPO)
    from agg2exp_core.aggregate import roi_importance

    low_attr, f32_attr = np.load(tmp / "low.npy"), np.load(tmp / "f32.npy")
    diff = max_rel_diff(low_attr, f32_attr)
    a, b = low_attr.ravel(), f32_attr.ravel()
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    labels = np.load(spec["mask"]).astype(np.int64)  # what users see: the RoI-importance matrices
    mass = [roi_importance(v, labels, "abs", n_rois=base["n_classes"]) for v in (low_attr, f32_attr)]
    print(f"\nautocast {args.autocast} vs float32 (VG, {f32['windows']} windows): max rel diff {diff:.2e}, "
          f"rel L2 error {np.linalg.norm(a - b) / np.linalg.norm(b):.2e}, cosine {cosine:.5f}; RoI-importance "
          f"(abs) max abs diff {np.nanmax(np.abs(mass[0] - mass[1])):.2e}; {low['seconds']:.1f} s vs "
          f"{f32['seconds']:.1f} s{_gpu(low)}")


def rss_table(args, tmp: Path, n_classes: int, stream_above: int) -> None:
    if not args.rss_sizes:
        return
    print(f"\npeak RSS of all-class VG ({args.network}, windows {args.rss_roi}^3, overlap 0, a thorax of "
          f"{THORAX_FOV_MM:.0f} mm; streamed automatically above {stream_above / 2**20:.0f} MiB of result)")
    print(f"{'volume':>8}{'windows':>9}{'result MB':>11}{'mode':>10}{'start MB':>10}{'peak MB':>9}"
          f"{'peak - result':>15}{'seconds':>9}")
    for size in args.rss_sizes:
        inputs = phantom_inputs(tmp, f"rss{size}", (size,) * 3, THORAX_FOV_MM / size)
        spec = {"n_classes": n_classes, "roi": [args.rss_roi] * 3, "overlap": 0.0, "device": args.device,
                "network": args.network, "n_samples": 1, "task": "ours", "method": "vg", **inputs}
        for mode in ("never", "file"):
            out = run_child({**spec, "stream": mode, "out": str(tmp / f"rss{size}.npy")}, REPO)
            (tmp / f"rss{size}.npy").unlink(missing_ok=True)
            in_ram = out["result_mb"] if mode == "never" else 0.0
            print(f"{size:>7}³{out['windows']:>9}{out['result_mb']:>11.0f}{'memory' if mode == 'never' else 'file':>10}"
                  f"{out['start_mb']:>10.0f}{out['peak_mb']:>9.0f}{out['peak_mb'] - in_ram:>15.0f}"
                  f"{out['seconds']:>9.1f}")


if __name__ == "__main__":
    main()
