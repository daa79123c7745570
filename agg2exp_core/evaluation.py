"""Evaluation of voxel attribution methods (Agg2Exp Sec. 3.3, App. B.2; efficient-KernelSHAP Sec. IV-C).

Metrics of one attribution map ``e_c [*S]`` explaining the aggregated function
``f_c(x) = sum_{P0_c} f_c(x)`` (class-c logits summed over the voxels predicted ``c`` on
the *clean* image; the mask stays fixed under perturbation, as for the gradient methods):

- faithfulness correlation: Pearson correlation, over ``n = 100`` random voxel subsets
  ``S_i`` of size ``m``, between ``sum_{S_i} e_c`` and ``f_c(x) - f_c(x_{S_i})`` (voxels of
  ``S_i`` set to the baseline 0). The paper uses ``m = 224**2``; on small (demo) volumes
  that would remove a third of the image, so ``m = min(224**2, max_fraction * p)`` with
  ``max_fraction = 0.1`` by default. Higher is better.
- sensitivity (Quantus' avg-/max-sensitivity, ``n = 3``, ``lower_bound = 0.1``):
  attributions of ``x + U(-0.1, 0.1)`` (or ``N(0, 0.1^2)``) noise against those of ``x``,
  both divided by their max ``|e|`` (App. B.2 normalises every map). The distance is
  ``||e - e'||_F / ||e||_F`` by default (relative change; the scale of the paper's
  Table 1); ``denominator="input"`` divides by ``||x||_F`` as Quantus does. Lower is better.
- complexity: fraction of voxels whose ``|e| / max|e|`` exceeds ``theta = 0.1``. Lower is better.
- efficiency: seconds to compute the attributions (all requested classes; per class =
  total / number of classes in :func:`evaluate_case`).
- MoRF / LeRF perturbation curves over units: units ranked by their score (KernelSHAP
  value, or the attribution summed over the unit), removed cumulatively most- /
  least-relevant first; the same value function and baseline as KernelSHAP are recorded
  after each step. AOPC = mean_k (s(0) - s_MoRF(k)); ABPC = mean_k (s_LeRF(k) - s_MoRF(k));
  normalised variants rescale every curve by ``(s - s_min) / (s_max - s_min)`` with
  ``s_max = s(0)``, ``s_min`` = the fully perturbed score (NaN when they coincide).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from agg2exp_core.errors import InputError
from agg2exp_core.kernelshap import UnitGame, _model_device, _model_dtype, build_game

FAITHFULNESS_SUBSET = 224 ** 2
METRIC_COLUMNS = ["method", "target_id", "metric", "value"]
CURVE_COLUMNS = ["method", "target_id", "ordering", "step", "fraction", "value"]


# ============================================================ model helpers
def _forward(model: Callable, x: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, l, *S]`` on the CPU (float32) of inputs ``[B, 1, *S]``."""
    with torch.no_grad():
        y = model(x.to(_model_device(model), _model_dtype(model)))
    return torch.as_tensor(y).detach().float().cpu()


def aggregated_logits(model: Callable, images: torch.Tensor, classes: Sequence[int],
                      masks: torch.Tensor, batch_size: int = 4) -> np.ndarray:
    """``f_c`` of each image and class: ``[B, C]`` (sum of class logits over ``masks [C, *S]``)."""
    out = []
    masks = masks.to(torch.float64)
    for i in range(0, len(images), batch_size):
        y = _forward(model, images[i:i + batch_size]).to(torch.float64)
        z = y[:, list(classes)]                                  # [b, C, *S]
        out.append((z * masks[None]).flatten(2).sum(dim=2))
    return torch.cat(out).numpy()


def clean_prediction(model: Callable, image: torch.Tensor) -> np.ndarray:
    """Argmax prediction ``[*S]`` of the clean image."""
    return _forward(model, image[None])[0].argmax(dim=0).numpy()


# ============================================================ faithfulness
def subset_size(n_voxels: int, size: int = FAITHFULNESS_SUBSET, max_fraction: float = 0.1) -> int:
    """``min(size, max_fraction * n_voxels)``, at least 1 (see module docstring)."""
    return int(max(1, min(size, int(max_fraction * n_voxels))))


def random_subsets(n_voxels: int, n: int = 100, size: int = FAITHFULNESS_SUBSET,
                   max_fraction: float = 0.1, seed: int | None = 0) -> np.ndarray:
    """``[n, m]`` flat voxel indices, each row a uniform subset without replacement."""
    rng = np.random.default_rng(seed)
    m = subset_size(n_voxels, size, max_fraction)
    return np.stack([rng.choice(n_voxels, m, replace=False) for _ in range(n)])


def faithfulness_drops(model: Callable, image: torch.Tensor, classes: Sequence[int], subsets: np.ndarray,
                       baseline: float = 0.0, prediction: np.ndarray | None = None,
                       batch_size: int = 4) -> np.ndarray:
    """``f_c(x) - f_c(x_S)`` for each subset and class: ``[n, C]``."""
    prediction = clean_prediction(model, image) if prediction is None else prediction
    masks = torch.from_numpy(np.stack([prediction == c for c in classes]))
    clean = aggregated_logits(model, image[None], classes, masks)[0]
    drops = []
    for i in range(0, len(subsets), batch_size):
        rows = subsets[i:i + batch_size]
        x = image.detach().float().cpu().reshape(1, -1).repeat(len(rows), 1)
        for j, idx in enumerate(rows):
            x[j, torch.from_numpy(idx)] = baseline
        perturbed = aggregated_logits(model, x.reshape(len(rows), 1, *image.shape[1:]), classes, masks, batch_size)
        drops.append(clean[None] - perturbed)
    return np.concatenate(drops)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def bootstrap_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int | None = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the Pearson correlation over pairs."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (n_boot, len(x)))
    r = np.array([pearson(x[i], y[i]) for i in idx])
    r = r[np.isfinite(r)]
    if not len(r):
        return float("nan"), float("nan")
    return float(np.quantile(r, alpha / 2)), float(np.quantile(r, 1 - alpha / 2))


def subset_sums(attributions: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Attribution summed over each subset: ``[n]`` (``attributions [*S]``)."""
    return np.asarray(attributions, float).reshape(-1)[subsets].sum(axis=1)


def faithfulness_correlation(model: Callable, image: torch.Tensor, attributions, class_id: int, *,
                             n: int = 100, size: int = FAITHFULNESS_SUBSET, max_fraction: float = 0.1,
                             baseline: float = 0.0, seed: int | None = 0, batch_size: int = 4) -> float:
    """Faithfulness correlation of one class's attribution map ``[*S]`` (module docstring)."""
    attributions = _np(attributions).reshape(image.shape[1:])
    subsets = random_subsets(attributions.size, n, size, max_fraction, seed)
    drops = faithfulness_drops(model, image, [class_id], subsets, baseline, batch_size=batch_size)[:, 0]
    return pearson(subset_sums(attributions, subsets), drops)


# ============================================================ sensitivity, complexity, efficiency
def normalise(attributions) -> np.ndarray:
    """Divide by the largest ``|value|`` (all-zero maps stay zero)."""
    a = _np(attributions).astype(np.float64)
    peak = np.abs(a).max() if a.size else 0.0
    return a / peak if peak > 0 else a


def complexity(attributions, theta: float = 0.1) -> float:
    """Fraction of voxels with ``|e| / max|e| > theta``."""
    a = np.abs(normalise(attributions))
    return float((a > theta).mean()) if a.size else float("nan")


def noisy_copies(image: torch.Tensor, n: int = 3, lower_bound: float = 0.1, noise: str = "uniform",
                 seed: int | None = 0) -> list[torch.Tensor]:
    """``n`` copies of the image with uniform ``U(-lb, lb)`` or Gaussian ``N(0, lb^2)`` noise."""
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    out = []
    for _ in range(n):
        if noise == "uniform":
            eps = (torch.rand(image.shape, generator=gen) * 2 - 1) * lower_bound
        elif noise == "gaussian":
            eps = torch.randn(image.shape, generator=gen) * lower_bound
        else:
            raise InputError("noise", f"unknown noise '{noise}' (use uniform or gaussian)")
        out.append(image + eps.to(image.dtype))
    return out


def sensitivity_distances(attributions, perturbed: Sequence, image: torch.Tensor | None = None,
                          denominator: str = "attribution") -> np.ndarray:
    """``||e - e'|| / ||e||`` (or ``/ ||x||``) of normalised maps, one per perturbed map."""
    a = normalise(attributions)
    if denominator == "attribution":
        scale = np.linalg.norm(a)
    elif denominator == "input":
        scale = float(torch.linalg.vector_norm(torch.as_tensor(image, dtype=torch.float64)))
    else:
        raise InputError("denominator", f"unknown '{denominator}' (use attribution or input)")
    d = np.array([np.linalg.norm(a - normalise(b)) for b in perturbed])
    return d / scale if scale > 0 else np.full(len(d), np.nan)


def sensitivity(model: Callable, image: torch.Tensor, attributions, class_id: int, explain: Callable, *,
                n: int = 3, lower_bound: float = 0.1, noise: str = "uniform", denominator: str = "attribution",
                seed: int | None = 0, **explain_params) -> tuple[float, float]:
    """(average, max) sensitivity of one class's map under ``n`` noisy inputs.

    ``explain(model, image, classes=[class_id], **explain_params) -> [1, *S]``.
    """
    perturbed = [_np(explain(model, x, classes=[class_id], **explain_params))[0]
                 for x in noisy_copies(image, n, lower_bound, noise, seed)]
    d = sensitivity_distances(attributions, perturbed, image, denominator)
    return float(d.mean()), float(d.max())


def timed_explain(explain: Callable, model: Callable, image: torch.Tensor, classes: Sequence[int],
                  **params) -> tuple[np.ndarray, float]:
    """(attributions ``[C, *S]``, seconds) of one explain call (the efficiency metric)."""
    start = time.perf_counter()
    attributions = _np(explain(model, image, classes=list(classes), **params))
    return attributions, time.perf_counter() - start


# ============================================================ perturbation curves
def unit_scores(attributions, partition: np.ndarray, reduce: str = "sum") -> np.ndarray:
    """Score of each unit ``[M]``: attribution summed (or averaged) over its voxels; -1 ignored."""
    a = _np(attributions).reshape(-1).astype(np.float64)
    p = np.asarray(partition).reshape(-1)
    inside = p >= 0
    m = int(p.max()) + 1 if inside.any() else 0
    total = np.bincount(p[inside], weights=a[inside], minlength=m)
    if reduce == "sum":
        return total
    if reduce == "mean":
        return total / np.maximum(np.bincount(p[inside], minlength=m), 1)
    raise InputError("reduce", f"unknown reduction '{reduce}' (use sum or mean)")


def removal_schedule(n_units: int, n_steps: int | None = None) -> np.ndarray:
    """Number of units removed after each step ``k = 0..K``: ``round(k M / K)``, ``K <= M``."""
    k = n_units if n_steps is None else max(1, min(int(n_steps), n_units))
    return np.rint(np.arange(k + 1) * n_units / max(k, 1)).astype(int)


def curve_masks(scores: np.ndarray, schedule: np.ndarray, ordering: str) -> np.ndarray:
    """Keep-masks ``[K+1, M]`` removing units most- (``morf``) or least- (``lerf``) relevant first."""
    order = np.argsort(-scores if ordering == "morf" else scores, kind="stable")
    masks = np.ones((len(schedule), len(scores)), bool)
    for k, removed in enumerate(schedule):
        masks[k, order[:removed]] = False
    return masks


def perturbation_curves_from_game(game: UnitGame, scores: np.ndarray, n_steps: int | None = None
                                  ) -> dict[str, np.ndarray]:
    """MoRF and LeRF curves of every class of a game.

    Args:
        game: the unit game (its classes, partition and value function).
        scores: ``[C, M]`` unit scores per class.

    Returns:
        dict with ``fraction [K+1]`` (units removed / M), ``morf`` and ``lerf`` ``[C, K+1]``.
    """
    m = game.n_units
    schedule = removal_schedule(m, n_steps)
    ends = game.values(np.stack([np.ones(m, bool), np.zeros(m, bool)]))  # shared by all curves
    c = len(game.classes)
    curves = {o: np.zeros((c, len(schedule))) for o in ("morf", "lerf")}
    for i in range(c):
        for ordering in ("morf", "lerf"):
            masks = curve_masks(np.asarray(scores[i], float), schedule, ordering)
            inner = game.values(masks[1:-1])[:, i] if len(schedule) > 2 else np.zeros(0)
            curves[ordering][i] = np.concatenate([[ends[0, i]], inner, [ends[1, i]]])
    return {"fraction": schedule / max(m, 1), **curves}


def perturbation_curves(model: Callable, image: torch.Tensor, attributions, class_id: int, *,
                        partition="semantic", value: str = "logit", reduce: str = "sum",
                        n_steps: int | None = None, **game_params) -> dict[str, np.ndarray]:
    """MoRF/LeRF curves of one class's map ``[*S]`` over the units of ``partition``.

    ``reduce="mean"`` recovers the unit values of a KernelSHAP map that is constant per
    unit. ``game_params`` go to :func:`agg2exp_core.kernelshap.build_game` (roi, baseline,
    roi_size, ...). Returns ``fraction [K+1]``, ``morf [K+1]``, ``lerf [K+1]``.
    """
    game = build_game(model, image, [class_id], partition=partition, value=value, **game_params)
    scores = unit_scores(attributions, game.partition, reduce)[None]
    out = perturbation_curves_from_game(game, scores, n_steps)
    return {"fraction": out["fraction"], "morf": out["morf"][0], "lerf": out["lerf"][0]}


def curve_metrics(morf: np.ndarray, lerf: np.ndarray, eps: float = 1e-12) -> dict[str, float]:
    """AOPC, ABPC and their normalised variants (efficient-KernelSHAP Eqs. 7-9).

    ``morf``, ``lerf``: ``[K+1]`` scores with step 0 the clean input and step K the fully
    perturbed one.
    """
    morf, lerf = np.asarray(morf, float), np.asarray(lerf, float)
    if len(morf) < 2:
        return {"aopc": float("nan"), "abpc": float("nan"), "naopc": float("nan"), "nabpc": float("nan")}
    s0, s_min = morf[0], morf[-1]
    out = {"aopc": float(np.mean(s0 - morf[1:])), "abpc": float(np.mean(lerf[1:] - morf[1:]))}
    span = s0 - s_min
    if abs(span) <= eps:
        out.update(naopc=float("nan"), nabpc=float("nan"))
        return out
    nm, nl = (morf - s_min) / span, (lerf - s_min) / span
    out.update(naopc=float(np.mean(nm[0] - nm[1:])), nabpc=float(np.mean(nl[1:] - nm[1:])))
    return out


# ============================================================ one case, many methods
DEFAULT_METRICS = ("faithfulness", "sensitivity", "complexity", "efficiency", "curves")


def evaluate_case(model: Callable, image: torch.Tensor, methods: Mapping[str, Mapping],
                  classes: Sequence[int], *, explain: Callable | None = None,
                  predict: Callable | None = None, metrics: Sequence[str] = DEFAULT_METRICS,
                  n_subsets: int = 100,
                  size: int = FAITHFULNESS_SUBSET, max_fraction: float = 0.1, n_bootstrap: int = 0,
                  sensitivity_n: int = 3, lower_bound: float = 0.1, noise: str = "uniform",
                  denominator: str = "attribution", theta: float = 0.1,
                  curve_partition="semantic", curve_value: str = "logit", curve_steps: int | None = None,
                  curve_params: Mapping | None = None, baseline: float = 0.0, seed: int | None = 0,
                  batch_size: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All metrics of several attribution methods on one image.

    Args:
        model: ``[B, 1, *S] -> [B, l, *S]`` logits; what ``explain`` explains, and the
            network of the curves' game (sliding window when ``curve_params`` has
            ``roi_size``).
        image: ``[1, *S]`` scaled image.
        methods: display name -> explain parameters; ``params["method"]`` (default: the
            name) selects the method of ``explain``.
        classes: class ids (channels) to explain.
        explain: ``explain(model, image, method=..., classes=..., **params) -> [C, *S]``;
            default :func:`agg2exp_core.attribution.explain`.
        predict: whole-volume logits ``[B, 1, *S] -> [B, l, *S]`` for the clean prediction
            and faithfulness (e.g. a sliding-window predictor); default ``model``.
        metrics: subset of ``faithfulness``, ``sensitivity``, ``complexity``,
            ``efficiency``, ``curves``.
        curve_partition, curve_value, curve_steps, curve_params: units, value function,
            number of steps (default one unit per step) and further
            :func:`~agg2exp_core.kernelshap.build_game` parameters of the curves.
        Other arguments: see the module docstring.

    Returns:
        ``metrics [method, target_id, metric, value]`` and
        ``curves [method, target_id, ordering, step, fraction, value]`` data frames.
    """
    if explain is None:
        from agg2exp_core.attribution import explain  # noqa: F811 - written in parallel
    unknown = set(metrics) - set(DEFAULT_METRICS)
    if unknown:
        raise InputError("metrics", f"unknown metric(s) {', '.join(sorted(unknown))}")
    classes = [int(c) for c in classes]
    predict = model if predict is None else predict
    prediction = clean_prediction(predict, image)
    rows: list[tuple] = []
    curve_rows: list[tuple] = []
    subsets = drops = game = None
    if "faithfulness" in metrics:
        subsets = random_subsets(int(np.prod(image.shape[1:])), n_subsets, size, max_fraction, seed)
        drops = faithfulness_drops(predict, image, classes, subsets, baseline, prediction, batch_size)
    if "curves" in metrics:
        game = build_game(model, image, classes, partition=curve_partition, value=curve_value,
                          baseline=baseline, prediction=prediction, batch_size=batch_size,
                          **dict(curve_params or {}))
    for name, params in methods.items():
        params = dict(params)
        method = params.pop("method", name)
        attr, seconds = timed_explain(explain, model, image, classes, method=method, **params)
        for i, c in enumerate(classes):
            if "efficiency" in metrics:
                rows.append((name, c, "efficiency_s", seconds / len(classes)))
            if "complexity" in metrics:
                rows.append((name, c, "complexity", complexity(attr[i], theta)))
            if drops is not None:
                sums = subset_sums(attr[i], subsets)
                rows.append((name, c, "faithfulness", pearson(sums, drops[:, i])))
                if n_bootstrap:
                    lo, hi = bootstrap_ci(sums, drops[:, i], n_bootstrap, seed=seed)
                    rows += [(name, c, "faithfulness_ci_low", lo), (name, c, "faithfulness_ci_high", hi)]
        if "sensitivity" in metrics:
            noisy = [_np(explain(model, x, method=method, classes=classes, **params))
                     for x in noisy_copies(image, sensitivity_n, lower_bound, noise, seed)]
            for i, c in enumerate(classes):
                d = sensitivity_distances(attr[i], [p[i] for p in noisy], image, denominator)
                rows += [(name, c, "sensitivity_avg", float(d.mean())), (name, c, "sensitivity_max", float(d.max()))]
        if game is not None and game.n_units:
            # a KernelSHAP map is constant per unit: its mean over the unit is the Shapley value
            reduce = "mean" if method == "kernelshap" else "sum"
            scores = np.stack([unit_scores(attr[i], game.partition, reduce) for i in range(len(classes))])
            curves = perturbation_curves_from_game(game, scores, curve_steps)
            for i, c in enumerate(classes):
                for key, value in curve_metrics(curves["morf"][i], curves["lerf"][i]).items():
                    rows.append((name, c, key, value))
                for ordering in ("morf", "lerf"):
                    for step, (frac, v) in enumerate(zip(curves["fraction"], curves[ordering][i])):
                        curve_rows.append((name, c, ordering, step, float(frac), float(v)))
    metrics_df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    curves_df = pd.DataFrame(curve_rows, columns=CURVE_COLUMNS)
    return metrics_df, curves_df


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


# ============================================================ command line
DEFAULT_METHODS = "vg,smoothgrad,ig,kernelshap"


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "evaluate", help="evaluate attribution methods (faithfulness, sensitivity, complexity, "
                         "efficiency, MoRF/LeRF curves) and store method_eval / perturbation_curve",
        description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True, help="cohort manifest CSV (case_id,image,label,...)")
    p.add_argument("--checkpoint", required=True, help="model checkpoint")
    p.add_argument("--db", required=True, help="DuckDB store to write into")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--classes", default="", help="class names or ids, comma-separated (default: all but background)")
    p.add_argument("--max-cases", type=int, default=3, help="evaluate at most this many cases (default 3)")
    p.add_argument("--split", default="", help="only cases of this manifest split (train/val/test)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated subset of metrics")
    p.add_argument("--n-subsets", type=int, default=100, help="faithfulness subsets (default 100)")
    p.add_argument("--sensitivity-n", type=int, default=3, help="noisy copies for sensitivity (default 3)")
    p.add_argument("--curve-steps", type=int, default=None, help="MoRF/LeRF steps (default: one per unit)")
    p.add_argument("--curve-value", default="logit", help="value function of the curves (logit/tp/fp/dice/softdice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_evaluate, handler=run_evaluate)
    return p


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``evaluate``: returns 0, or 1 when some case failed (recorded in ``failures``)."""
    from agg2exp_core import store
    from agg2exp_core.cohort import load_case, read_manifest
    from agg2exp_core.labels import roi_specs
    from agg2exp_core.model import load_checkpoint

    manifest = read_manifest(args.manifest)
    if args.split:
        manifest = manifest[manifest["split"] == args.split]
    if args.max_cases is not None:
        manifest = manifest.head(max(args.max_cases, 0))
    if manifest.empty:
        raise InputError(args.manifest, f"no case to evaluate (split '{args.split or 'any'}')")
    segmenter = load_checkpoint(args.checkpoint, device=args.device)
    names = list(segmenter.label_names)
    classes = parse_classes(args.classes, names)
    # every method explains the network under the checkpoint's own sliding window
    window = {"roi_size": tuple(segmenter.roi_size), "overlap": float(segmenter.overlap)}
    methods = {m.strip(): dict(window) for m in args.methods.split(",") if m.strip()}
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    predict = segmenter_model(segmenter)
    settings = {"metrics": metrics, "n_subsets": args.n_subsets, "sensitivity_n": args.sensitivity_n,
                "curve_steps": args.curve_steps, "curve_value": args.curve_value, "seed": args.seed,
                "classes": classes}
    failed = 0
    with store.open_writer(args.db) as con:
        roi_ids = store.upsert_rois(con, roi_specs(tuple(names)))
        _ensure_cases(con, manifest)
        run_ids = {}
        for name, params in methods.items():
            run_params = {"evaluation": settings, **params}
            run_ids[name] = store.run_id_for(f"eval-{name}", run_params, segmenter.checkpoint_sha256, "evaluate")
            store.ensure_run(con, run_ids[name], name, run_params, segmenter.checkpoint_sha256, names,
                             source="evaluate", description="attribution-method evaluation")
        for row in manifest.to_dict("records"):
            case_id = str(row["case_id"])
            try:
                case = load_case(row, segmenter.preprocessing, n_labels=len(names))
                scores, curves = evaluate_case(segmenter, case.image, methods, classes, metrics=metrics,
                                               predict=predict, curve_params=window,
                                               n_subsets=args.n_subsets, sensitivity_n=args.sensitivity_n,
                                               curve_steps=args.curve_steps, curve_value=args.curve_value,
                                               seed=args.seed)
                write_case_results(con, run_ids, case_id, scores, curves, {c: roi_ids[names[c]] for c in classes})
                print(f"evaluate: {case_id}: {len(scores)} metric values")
            except Exception as err:  # one bad case must not stop the cohort
                failed += 1
                for run_id in run_ids.values():
                    store.record_failure(con, run_id, case_id, "evaluate", f"{type(err).__name__}: {err}")
                print(f"evaluate: {case_id}: failed: {type(err).__name__}: {err}")
    return 1 if failed else 0


def parse_classes(text: str, names: Sequence[str]) -> list[int]:
    """Class ids from a comma-separated list of names or ids; empty = all but background."""
    if not text.strip():
        return [i for i, n in enumerate(names) if n != "background"] or list(range(len(names)))
    out = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        if token.lstrip("-").isdigit() and 0 <= int(token) < len(names):
            out.append(int(token))
        elif token in names:
            out.append(list(names).index(token))
        else:
            raise InputError("--classes", f"unknown class '{token}' (model classes: {', '.join(names)})")
    return out


def segmenter_model(segmenter) -> Callable:
    """``[B, 1, *S] -> [B, l, *S]`` logits from a Segmenter's ``predict`` (one image at a time)."""
    predict = getattr(segmenter, "predict", None)
    if predict is None:
        return segmenter

    def model(x: torch.Tensor) -> torch.Tensor:
        outs = []
        for xi in x:
            y = torch.as_tensor(predict(xi)).detach().float().cpu()
            outs.append(y[0] if y.dim() == xi.dim() + 1 else y)  # accept [1, l, *S] or [l, *S]
        return torch.stack(outs)

    return model


def write_case_results(con, run_ids: Mapping[str, str], case_id: str, scores: pd.DataFrame,
                       curves: pd.DataFrame, target_ids: Mapping[int, int]) -> None:
    """Replace one case's rows of method_eval and perturbation_curve, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        for name, run_id in run_ids.items():
            for table in ("method_eval", "perturbation_curve"):
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND case_id = ?", [run_id, case_id])
            s = scores[scores.method == name]
            rows = [[run_id, case_id, int(target_ids[int(t)]), m, _none(v)]
                    for t, m, v in zip(s.target_id, s.metric, s.value)]
            if rows:
                con.executemany("INSERT INTO method_eval VALUES (?, ?, ?, ?, ?)", rows)
            c = curves[curves.method == name]
            rows = [[run_id, case_id, int(target_ids[int(t)]), o, int(k), float(f), _none(v)]
                    for t, o, k, f, v in zip(c.target_id, c.ordering, c.step, c.fraction, c.value)]
            if rows:
                con.executemany("INSERT INTO perturbation_curve VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _ensure_cases(con, manifest: pd.DataFrame) -> None:
    """Register cases the store does not know yet (never overwrite precompute's metadata)."""
    from agg2exp_core import store
    known = {r[0] for r in con.execute("SELECT case_id FROM cases").fetchall()}
    new = manifest[~manifest.case_id.astype(str).isin(known)]
    if len(new):
        frame = new.rename(columns={"image": "image_path", "label": "label_path"})
        store.upsert_cases(con, frame)


def _none(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v
