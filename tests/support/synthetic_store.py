"""A realistic synthetic DuckDB store for dashboard tests and benchmarks.

``build_synthetic_store`` fills every table of the schema (``agg2exp_core.store``) with a
cohort that behaves like the demo: 17 thorax classes plus the two pathology RoIs,
datasets ``reference`` (train/test) and ``external`` (with pleural effusion and
consolidation), sex and age (a few unknown), Dice, Isolation-Forest-like anomaly
scores, the Spearman and inlier/outlier tables, small slice artefacts in the format of
docs/ARCHITECTURE.md, and, as ``python -m agg2exp_core evaluate`` writes them, one
evaluation run per attribution method (``runs.source = 'evaluate'``, rows in
``method_eval`` and ``perturbation_curve`` only: no ``case_status``, no matrices).

Planted effects (the tests look for them): female cases put more of the heart's mass on
the aorta; external cases with a pathology put mass on the pathology RoIs.

Writes go through ``agg2exp_core.store`` (``open_writer``, ``upsert_rois``,
``upsert_cases``, ``ensure_run``, ``write_case``, ``record_failure``,
``replace_table_rows``) and ``store.write_method_eval``, except the
long ``local_importance`` rows, which are inserted as one frame per run (``write_case``
inserts row by row, minutes for 2,000 cases). For big stores (``bulk``) the cases and
the other per-case rows of ``write_case`` are also inserted as frames (DuckDB scans
numpy-backed frames; ``executemany`` takes minutes for 20,000 cases); a test checks both
paths write the same tables. Everything is drawn with vectorised numpy, so 20,000 cases
(≈ 6.5 M matrix rows per run) build in about a minute.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from agg2exp_core import store
from agg2exp_core.pipeline.artifacts import attribution_slices, block_factors, block_mean
from agg2exp_core.labels import PATHOLOGY_ROIS, THORAX_LABELS, roi_specs

MODEL_SHA = "synthetic0000model0000sha256"
ARTIFACT_SHAPE = (32, 24, 24)
METHOD_PARAMS = {
    "vg": {},
    "smoothgrad": {"n_samples": 20, "sigma": 0.1},
    "ig": {"steps": 20, "baseline": 0.0},
    "kernelshap": {"partition": "semantic", "n_coalitions": 256, "seed": 0},
}
# Relative cost and quality of each method, so the methods table looks like Table 1.
METHOD_PROFILE = {
    "vg": dict(faith=0.38, sens=1.1, compl=0.001, secs=12.0),
    "smoothgrad": dict(faith=0.33, sens=0.77, compl=0.001, secs=209.0),
    "ig": dict(faith=0.21, sens=0.85, compl=0.001, secs=210.0),
    "kernelshap": dict(faith=0.16, sens=0.35, compl=0.92, secs=857.0),
}
EVAL_CASES, EVAL_TARGETS = 8, 7      # evaluated test cases and classes per method (like the demo)
# Ellipsoids (centre, radii) in unit coordinates of RAS [X, Y, Z] for the phantom labels.
_SHAPES = {
    "lung_upper_lobe_left": ((0.25, 0.55, 0.70), (0.15, 0.25, 0.20)),
    "lung_lower_lobe_left": ((0.25, 0.50, 0.35), (0.15, 0.27, 0.22)),
    "lung_upper_lobe_right": ((0.75, 0.55, 0.72), (0.15, 0.25, 0.18)),
    "lung_middle_lobe_right": ((0.75, 0.65, 0.50), (0.13, 0.16, 0.10)),
    "lung_lower_lobe_right": ((0.75, 0.45, 0.32), (0.15, 0.27, 0.20)),
    "heart": ((0.55, 0.60, 0.40), (0.16, 0.17, 0.16)),
    "aorta": ((0.45, 0.42, 0.60), (0.06, 0.07, 0.32)),
    "pulmonary_vein": ((0.50, 0.50, 0.50), (0.12, 0.04, 0.04)),
    "trachea": ((0.50, 0.60, 0.85), (0.05, 0.05, 0.16)),
    "thyroid_gland": ((0.50, 0.70, 0.95), (0.09, 0.05, 0.05)),
    "vertebrae": ((0.50, 0.15, 0.50), (0.07, 0.08, 0.55)),
    "autochthon_left": ((0.40, 0.06, 0.50), (0.06, 0.05, 0.55)),
    "autochthon_right": ((0.60, 0.06, 0.50), (0.06, 0.05, 0.55)),
    "sternum": ((0.50, 0.92, 0.50), (0.04, 0.04, 0.30)),
    "costal_cartilages": ((0.50, 0.90, 0.30), (0.22, 0.04, 0.06)),
}
_HU = {"background": -1000, "body": 40, "lung": -850, "aorta": 200, "heart": 45, "pulmonary_vein": 180,
       "trachea": -1000, "thyroid_gland": 90, "ribs": 700, "vertebrae": 650, "sternum": 600,
       "costal_cartilages": 150, "autochthon_left": 55, "autochthon_right": 55}


def build_synthetic_store(path: str | Path, n_cases: int = 60, seed: int = 0, with_artifacts: bool | int = True,
                          run_methods: Sequence[str] = ("vg",), bulk: bool | None = None,
                          eval_methods: Sequence[str] = tuple(METHOD_PROFILE),
                          class_names: Sequence[str] = THORAX_LABELS) -> dict:
    """Build (or replace) a synthetic store at ``path``; return what was written.

    ``with_artifacts``: True for a slice artefact per case, an int ``k`` for the first ``k``
    cases by id only (keeps big benchmark stores small). ``bulk`` (default: more than 200
    cases) writes the cases and the per-case rows of ``store.write_case`` as one frame per
    table. ``eval_methods``: one evaluation run per method (empty: none).

    Returns ``{"path", "run_ids" (method -> run id), "eval_run_ids" (method -> evaluation
    run id), "case_ids", "class_names", "roi_ids" (name -> id), "n_cases", "artifact_root"}``.

    ``class_names``: the model's label set, background first (default: the 17 thorax labels;
    ``label_sets.TOTALSEG_LIKE`` has 117). Planted effects and phantom organs apply to the
    thorax names the set contains; other classes get the cohort-typical masses only.
    """
    path = Path(path)
    for stale in (path, store.writing_path(path)):
        stale.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    bulk = n_cases > 200 if bulk is None else bulk
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names) or class_names[:1] != ["background"]:
        raise ValueError("class_names: unique names, 'background' first")
    cases = _cases(n_cases, rng)
    base = _base_matrix(class_names, rng)
    run_ids: dict[str, str] = {}
    with store.open_writer(path) as con:
        roi_ids = store.upsert_rois(con, roi_specs(class_names, PATHOLOGY_ROIS))
        if bulk:
            _insert(con, "cases", cases.reindex(columns=list(store.CASE_COLUMNS)))
        else:
            store.upsert_cases(con, cases)
        dice = _dice(cases, class_names, roi_ids, rng)
        for k, method in enumerate(run_methods):
            params = METHOD_PARAMS.get(method, {})
            run_id = store.run_id_for(method, params, MODEL_SHA, cohort="synthetic")
            run_ids[method] = run_id
            store.ensure_run(con, run_id, method, params, MODEL_SHA, class_names, source="synthetic",
                             description=f"Synthetic {method} run for tests", code_version="synthetic")
            cube_abs = _local_matrices(cases, base, class_names, np.random.default_rng(seed + 101 * k))
            _write_run(con, path, run_id, cases, cube_abs, class_names, roi_ids, dice if k == 0 else None,
                       with_artifacts, np.random.default_rng(seed + 7 + k), bulk)
            _write_analysis(con, run_id, cases, cube_abs, dice, class_names, roi_ids,
                            np.random.default_rng(seed + 13 + k))
        eval_run_ids = _write_evaluation(con, cases, class_names, roi_ids, eval_methods,
                                         np.random.default_rng(seed + 29))
    return {"path": path, "run_ids": run_ids, "eval_run_ids": eval_run_ids, "case_ids": cases.case_id.tolist(),
            "class_names": class_names, "roi_ids": roi_ids, "n_cases": n_cases,
            "artifact_root": path.parent / "artifacts"}


def _cases(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Case metadata: ~70 % reference (train/test), ~30 % external with pathologies."""
    n_external = max(2, int(round(0.3 * n)))
    index = np.arange(n)
    external = index >= n - n_external
    sex = rng.choice(np.array(["F", "M"], dtype=object), size=n)
    age = np.clip(rng.normal(58, 15, size=n), 18, 92).round()
    effusion = external & (rng.random(n) < 0.45)
    consolidation = external & (rng.random(n) < 0.35)
    split = np.where(external | (rng.random(n) < 0.4), "test", "train")
    width = max(4, len(str(n - 1)))
    names = [f"case{i:0{width}d}" for i in index]
    frame = pd.DataFrame({
        "case_id": [f"{'ext' if e else 'ref'}{i:0{width}d}" for i, e in zip(index, external)],
        "dataset": np.where(external, "external", "reference"), "split": split,
        "sex": sex, "age": age.astype(object),
        "image_path": [f"images/{c}.nii.gz" for c in names], "label_path": [f"labels/{c}.nii.gz" for c in names],
        "pathologies": [";".join(p for p, on in (("pleural_effusion", a), ("consolidation", b)) if on)
                        for a, b in zip(effusion, consolidation)]})
    unknown = rng.choice(n, size=max(1, n // 30), replace=False)     # a few cases without metadata
    frame.loc[unknown, ["sex", "age"]] = None
    return frame


def _base_matrix(class_names: list[str], rng: np.random.Generator) -> np.ndarray:
    """Cohort-typical importance of each class source (columns) for each target (rows)."""
    n = len(class_names)
    base = rng.gamma(0.6, 1.0, size=(n, n)) * 0.04
    idx = {name: i for i, name in enumerate(class_names)}
    for i in range(n):
        base[i, i] = rng.uniform(0.5, 1.4)
        base[i, 0] += 0.15                                                 # background
    neighbours = [("pulmonary_vein", "heart", 0.35), ("pulmonary_vein", "lung_lower_lobe_left", 0.2),
                  ("pulmonary_vein", "lung_lower_lobe_right", 0.2), ("aorta", "heart", 0.25),
                  ("heart", "aorta", 0.2), ("ribs", "costal_cartilages", 0.1), ("sternum", "costal_cartilages", 0.2),
                  ("autochthon_left", "vertebrae", 0.2), ("autochthon_right", "vertebrae", 0.2),
                  ("trachea", "thyroid_gland", 0.1), ("thyroid_gland", "trachea", 0.25)]
    for target, source, weight in neighbours:
        if target in idx and source in idx:
            base[idx[target], idx[source]] += weight
    return base / base.sum(axis=1, keepdims=True)


def _dirichlet_rows(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Dirichlet draw per row of ``alpha [..., k]`` (normalised Gamma draws, all rows at once)."""
    draws = rng.gamma(alpha)
    total = draws.sum(axis=-1, keepdims=True)
    return np.divide(draws, total, out=np.zeros_like(draws), where=total > 0)


def _local_matrices(cases: pd.DataFrame, base: np.ndarray, class_names: list[str],
                    rng: np.random.Generator) -> np.ndarray:
    """abs masses ``[cases, targets, class sources + pathology sources]``."""
    n, l = len(cases), base.shape[0]
    idx = {name: i for i, name in enumerate(class_names)}
    prior = np.broadcast_to(base, (n, l, l)).copy()
    if {"heart", "aorta"} <= set(idx):
        prior[(cases.sex == "F").to_numpy(), idx["heart"], idx["aorta"]] += 0.15      # planted effect: heart -> aorta
    age = pd.to_numeric(cases.age, errors="coerce").fillna(40).to_numpy(dtype=float)
    if {"ribs", "vertebrae"} <= set(idx):
        prior[:, idx["ribs"], idx["vertebrae"]] += 0.001 * np.maximum(age - 40, 0)
    prior /= prior.sum(axis=2, keepdims=True)
    rows = _dirichlet_rows(80 * prior + 1e-3, rng)
    cube = np.zeros((n, l, l + len(PATHOLOGY_ROIS)))
    cube[:, :, :l] = rows
    lung_mass = rows[:, :, [idx[k] for k in class_names if k.startswith("lung")]].sum(axis=2)    # [n, l]
    lists = cases.pathologies.fillna("").str.split(";")
    for j, name in enumerate(PATHOLOGY_ROIS):
        has = lists.map(lambda names: name in names).to_numpy(dtype=bool)
        cube[has, :, l + j] = lung_mass[has] * rng.uniform(0.05, 0.35, size=(int(has.sum()), l))
    return cube


def _dice(cases: pd.DataFrame, class_names: list[str], roi_ids: dict[str, int],
          rng: np.random.Generator) -> pd.DataFrame:
    """Dice per case and class: lower on external cases and on the lungs of cases with a pathology."""
    n, l = len(cases), len(class_names)
    base = np.array([0.99 if name == "background" else 0.88 for name in class_names])
    lung = np.array([name.startswith("lung") for name in class_names])
    penalty = np.where(cases.dataset == "external", 0.05, 0.0)[:, None]
    lung_hit = 0.08 * ((cases.pathologies.fillna("") != "").to_numpy()[:, None] & lung[None, :])
    dice = np.clip(base[None, :] - penalty - lung_hit + rng.normal(0, 0.04, size=(n, l)), 0.2, 0.999)
    return pd.DataFrame({"case_id": np.repeat(cases.case_id.to_numpy(), l),
                         "class_id": np.tile([roi_ids[name] for name in class_names], n).astype("int32"),
                         "dice": dice.ravel()})


def _write_run(con, path: Path, run_id: str, cases: pd.DataFrame, cube_abs: np.ndarray,
               class_names: list[str], roi_ids: dict[str, int], dice: pd.DataFrame | None,
               with_artifacts: bool | int, rng: np.random.Generator, bulk: bool) -> None:
    targets = [roi_ids[n] for n in class_names]
    sources = targets + [roi_ids[n] for n in PATHOLOGY_ROIS]
    n_artifacts = len(cases) if with_artifacts is True else int(with_artifacts or 0)
    with_slices = sorted(cases.case_id)[:n_artifacts]
    by_id = cases.set_index("case_id", drop=False)
    artifacts = {}
    for case_id in with_slices:
        artifacts[case_id] = f"artifacts/{run_id}/{case_id}.npz"
        _write_artifact(path.parent / artifacts[case_id], by_id.loc[case_id], class_names, rng)
    seconds = rng.uniform(2, 6, size=len(cases))
    if bulk:     # the rows write_case writes, one frame per table (write_case costs ~50 ms per case)
        _insert(con, "case_status", pd.DataFrame({"run_id": run_id, "case_id": cases.case_id, "seconds": seconds,
                                                  "finished_at": pd.Timestamp.now(tz="UTC").tz_localize(None)}))
        if dice is not None:
            _insert(con, "dice", dice.assign(model_sha256=MODEL_SHA)[["model_sha256", "case_id", "class_id", "dice"]])
        _insert(con, "artifacts", pd.DataFrame({"run_id": run_id, "case_id": list(artifacts),
                                                "path": list(artifacts.values())}))
    else:
        dice_by_case = dict(tuple(dice.groupby("case_id"))) if dice is not None else {}
        for case_id, s in zip(cases.case_id, seconds):
            part = dice_by_case.get(case_id)
            rows = ([[MODEL_SHA, case_id, int(c), float(d)] for c, d in zip(part.class_id, part.dice)]
                    if part is not None else [])
            store.write_case(con, run_id, case_id, rows=[], dice_rows=rows, artifact_path=artifacts.get(case_id),
                             seconds=float(s))
    # Signed variants: the positive and negative parts spread a little differently.
    pos = _dirichlet_rows(60 * cube_abs + 1e-3, rng) * (cube_abs.sum(axis=2, keepdims=True) > 0)
    neg = _dirichlet_rows(40 * cube_abs + 1e-3, rng) * (cube_abs.sum(axis=2, keepdims=True) > 0)
    n, l, r = cube_abs.shape
    shares = _volume_shares(n, l, r, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = np.where(shares[:, None, :] > 0, cube_abs / shares[:, None, :], np.nan)
    # Rows refer to cases by position; SQL swaps in the ids (a 6.5 M-row column of strings
    # would be the slowest part of the insert).
    frame = pd.DataFrame({"case_index": np.repeat(np.arange(n, dtype=np.int32), l * r),
                          "target_id": np.tile(np.repeat(np.asarray(targets, np.int32), r), n),
                          "source_id": np.tile(np.asarray(sources, np.int32), n * l),
                          "mass_abs": cube_abs.ravel(), "mass_pos": pos.ravel(), "mass_neg": neg.ravel(),
                          "volume_share": np.repeat(shares[:, None, :], l, axis=1).ravel(), "mass_lift": lift.ravel()})
    ids = pd.DataFrame({"case_index": np.arange(n, dtype=np.int32), "case_id": cases.case_id.to_numpy()})
    # One case that failed in this run (the failures table), with no results.
    store.record_failure(con, run_id, "failed0000", "explain", "synthetic failure: out of memory")
    con.execute("DELETE FROM local_importance WHERE run_id = ?", [run_id])
    con.register("_rows", frame)
    con.register("_ids", ids)
    con.execute("INSERT INTO local_importance SELECT ?, i.case_id, r.target_id, r.source_id, r.mass_abs, "
                "r.mass_pos, r.mass_neg, r.volume_share, r.mass_lift FROM _rows r JOIN _ids i USING (case_index) "
                "ORDER BY r.case_index, r.target_id, r.source_id", [run_id])
    con.unregister("_rows")
    con.unregister("_ids")


def _volume_shares(n: int, l: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """Region volume shares ``[cases, sources]``: class regions (background ~60 %) sum to one, the
    pathology masks (inside the lungs) are a few per cent."""
    base = np.concatenate([[0.6], 0.4 * rng.dirichlet(np.full(l - 1, 2.0))])
    shares = np.zeros((n, r))
    shares[:, :l] = _dirichlet_rows(np.broadcast_to(400 * base, (n, l)), rng)
    shares[:, l:] = rng.uniform(0.005, 0.03, size=(n, r - l))
    return shares


def _insert(con, table: str, frame: pd.DataFrame) -> None:
    """INSERT OR REPLACE a frame whose columns are the table's, in order."""
    if frame.empty:
        return
    con.register("_frame", frame)
    con.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM _frame")
    con.unregister("_frame")


def _write_artifact(target: Path, case, class_names: list[str], rng: np.random.Generator) -> None:
    """Slice artefact of one case (docs/ARCHITECTURE.md): ct, pred, gt, spacing, attr_*, index_*, roi_*."""
    labels, ct, extra = _phantom(case, class_names, rng)
    pred = labels.copy()
    moved = int(rng.integers(1, len(class_names)))     # the model misses one class by a voxel
    pred[(pred == moved)] = 0
    pred[np.roll(labels == moved, 1, axis=int(rng.integers(0, 3)))] = moved
    arrays = {"ct": ct, "pred": pred.astype(np.uint8), "gt": labels.astype(np.uint8),
              "spacing": np.array([1.5, 1.5, 2.0])}
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in labels.shape], indexing="ij"))
    block = block_factors(labels.shape, max_side=16)       # (2, 2, 2): exercises the downsampling
    arrays["attrvol_block"] = block
    for c in range(len(class_names)):
        mask = pred == c
        if not mask.any():
            continue
        index = np.array([int(np.argmax(mask.sum(axis=tuple(a for a in range(3) if a != ax))))
                          for ax in range(3)])
        centre = np.array([g[mask].mean() for g in grid])
        dist2 = sum((grid[a] - centre[a]) ** 2 for a in range(3))
        field = np.exp(-dist2 / 30.0) - 0.5 * np.exp(-dist2 / 80.0) * (~mask)
        field = field * rng.uniform(0.5, 2.0) * 1e-3 + rng.normal(0, 2e-5, size=field.shape)
        for axis, plane in attribution_slices(field, index).items():
            arrays[f"attr_{c}_{axis}"] = plane
        arrays[f"attrvol_{c}"] = block_mean(field, block)
        arrays[f"index_{c}"] = index.astype(np.int64)
    for name, mask in extra.items():
        arrays[f"roi_{name}"] = mask.astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, **arrays)


def _phantom(case, class_names: list[str], rng: np.random.Generator):
    """Label map, CT (int16 HU) and pathology masks of a tiny thorax phantom."""
    shape = ARTIFACT_SHAPE
    u = np.stack(np.meshgrid(*[(np.arange(s) + 0.5) / s for s in shape], indexing="ij"))
    jitter = rng.normal(0, 0.015, size=3)
    idx = {name: i for i, name in enumerate(class_names)}
    labels = np.zeros(shape, np.uint8)
    ct = np.full(shape, _HU["background"], np.float32)
    body = ((u[0] - 0.5) / 0.49) ** 2 + ((u[1] - 0.5) / 0.47) ** 2 <= 1
    ct[body] = _HU["body"]
    ribs = body & (((u[0] - 0.5) / 0.45) ** 2 + ((u[1] - 0.5) / 0.43) ** 2 > 1) & (np.sin(u[2] * 25) > 0.2)
    for name, (centre, radii) in _SHAPES.items():
        if name not in idx:
            continue
        centre = np.asarray(centre) + jitter
        inside = sum(((u[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1
        labels[inside & body] = idx[name]
        ct[inside & body] = _HU["lung"] if name.startswith("lung") else _HU.get(name, 40)
    labels[ribs] = idx.get("ribs", 0)
    ct[ribs] = _HU["ribs"]
    extra = {}
    lungs = np.isin(labels, [idx[n] for n in class_names if n.startswith("lung")])
    pathologies = (case.pathologies or "").split(";")
    if "pleural_effusion" in pathologies:
        effusion = lungs & (u[1] < 0.35) & (u[2] < 0.45)
        extra["pleural_effusion"] = effusion
        ct[effusion] = 15
    if "consolidation" in pathologies:
        centre = (0.75, 0.45, 0.35)
        blob = lungs & (sum(((u[a] - centre[a]) / 0.1) ** 2 for a in range(3)) <= 1)
        extra["consolidation"] = blob
        ct[blob] = -100
    ct = ndimage.gaussian_filter(ct, 0.6) + rng.normal(0, 15, size=shape)
    return labels, np.clip(ct, -1024, 3071).astype(np.int16), extra


def _write_analysis(con, run_id: str, cases: pd.DataFrame, cube_abs: np.ndarray, dice: pd.DataFrame,
                    class_names: list[str], roi_ids: dict[str, int], rng: np.random.Generator) -> None:
    """anomaly, anomaly_dice and outlier_tests of one run."""
    targets = [roi_ids[n] for n in class_names]
    reference = (cases.dataset == "reference").to_numpy()
    mean = cube_abs[reference].mean(axis=0)
    spread = cube_abs[reference].std(axis=0) + 1e-3
    z = np.sqrt((((cube_abs - mean) / spread) ** 2).mean(axis=2))           # [cases, targets]
    scores = z + rng.normal(0, 0.05, size=z.shape)
    scores = np.concatenate([scores, scores.mean(axis=1, keepdims=True)], axis=1)
    ids = targets + [store.AVERAGE_TARGET]
    threshold = np.quantile(scores[reference], 0.9, axis=0)
    anomaly = pd.DataFrame({
        "run_id": run_id, "case_id": np.repeat(cases.case_id.to_numpy(), len(ids)),
        "target_id": np.tile(ids, len(cases)).astype("int32"), "score": scores.ravel(),
        "is_outlier": (scores > threshold).ravel()})
    store.replace_table_rows(con, "anomaly", run_id, anomaly)

    dice_wide = dice.pivot(index="case_id", columns="class_id", values="dice").reindex(cases.case_id)
    scored = ~reference | (cases.split == "test").to_numpy()
    rows_ad, rows_ot = [], []
    for k, target in enumerate(ids):
        d = dice_wide.mean(axis=1) if target == store.AVERAGE_TARGET else dice_wide[target]
        s = scores[:, k]
        rho, p = stats.spearmanr(s[scored], d.to_numpy()[scored])
        rows_ad.append([run_id, target, float(rho), float(p), int(scored.sum())])
        outlier = s > threshold[k]
        sex = cases.sex.to_numpy()
        known = pd.notna(sex)
        table = [[int(((sex == g) & outlier & known).sum()), int(((sex == g) & ~outlier & known).sum())]
                 for g in ("F", "M")]
        odds, p_sex = stats.fisher_exact(table)
        rows_ot.append([run_id, target, "sex", "fisher_exact", float(odds), float(p_sex),
                        int((~outlier & known).sum()), int((outlier & known).sum())])
        age = pd.to_numeric(cases.age, errors="coerce").to_numpy()
        ok = ~np.isnan(age)
        if (ok & outlier).sum() and (ok & ~outlier).sum():
            u_stat, p_age = stats.mannwhitneyu(age[ok & outlier], age[ok & ~outlier])
        else:
            u_stat, p_age = np.nan, np.nan
        rows_ot.append([run_id, target, "age", "mannwhitneyu", float(u_stat), float(p_age),
                        int((ok & ~outlier).sum()), int((ok & outlier).sum())])
    store.replace_table_rows(con, "anomaly_dice", run_id, pd.DataFrame(
        rows_ad, columns=["run_id", "target_id", "spearman_rho", "p_value", "n"]))
    store.replace_table_rows(con, "outlier_tests", run_id, pd.DataFrame(
        rows_ot, columns=["run_id", "target_id", "variable", "test", "statistic", "p_value",
                          "n_inliers", "n_outliers"]))


def _write_evaluation(con, cases: pd.DataFrame, class_names: list[str], roi_ids: dict[str, int],
                      methods: Sequence[str], rng: np.random.Generator) -> dict[str, str]:
    """One evaluation run per method, written as ``python -m agg2exp_core evaluate`` writes it.

    Metric names are the ones ``agg2exp_core.analysis.evaluation`` writes (``efficiency_s``,
    ``complexity``, ``faithfulness``, ``sensitivity_*`` and ``curve_metrics``' AOPC/ABPC
    family), through the core's ``store.write_method_eval``; the runs get no case_status rows.
    """
    if not methods:
        return {}
    # agg2exp_core.analysis.evaluation imports torch: only when evaluation runs are written
    from agg2exp_core.analysis.evaluation import CURVE_COLUMNS, METRIC_COLUMNS, curve_metrics

    settings = {"metrics": ["faithfulness", "sensitivity", "complexity", "efficiency", "curves"], "seed": 0}
    run_ids = {}
    for name in methods:
        params = {"evaluation": settings, **METHOD_PARAMS.get(name, {})}
        run_ids[name] = store.run_id_for(f"eval-{name}", params, MODEL_SHA, "evaluate")
        store.ensure_run(con, run_ids[name], name, params, MODEL_SHA, class_names, source="evaluate",
                         description="attribution-method evaluation", code_version="synthetic")
    channels = list(range(1, 1 + EVAL_TARGETS))
    fractions = np.linspace(0, 1, 11)
    for case_id in cases.case_id[cases.split == "test"].head(EVAL_CASES):
        scores, curves = [], []
        for name in methods:
            profile = METHOD_PROFILE.get(name, METHOD_PROFILE["vg"])
            seconds = abs(rng.normal(profile["secs"], 0.3 * profile["secs"]))
            for c in channels:
                decay = 4 + 6 * profile["faith"] + rng.normal(0, 0.5)
                morf = np.exp(-decay * fractions) + rng.normal(0, 0.02, 11)
                lerf = 1 - 0.4 * fractions ** 2 + rng.normal(0, 0.02, 11)
                values = {"efficiency_s": seconds / len(channels),
                          "complexity": float(np.clip(rng.normal(profile["compl"], 0.05 * profile["compl"] + 1e-4),
                                                      0, 1)),
                          "faithfulness": rng.normal(profile["faith"], 0.12),
                          "sensitivity_avg": abs(rng.normal(profile["sens"] * 0.6, 0.1)),
                          "sensitivity_max": abs(rng.normal(profile["sens"], 0.2)),
                          **curve_metrics(morf, lerf)}
                scores += [(name, c, metric, float(value)) for metric, value in values.items()]
                for ordering, curve in (("morf", morf), ("lerf", lerf)):
                    curves += [(name, c, ordering, step, float(f), float(v))
                               for step, (f, v) in enumerate(zip(fractions, curve))]
        store.write_method_eval(con, run_ids, case_id, pd.DataFrame(scores, columns=METRIC_COLUMNS),
                           pd.DataFrame(curves, columns=CURVE_COLUMNS), {c: roi_ids[class_names[c]] for c in channels})
    return run_ids


def read_sql(store_or_ref, sql: str, params: Sequence = ()) -> pd.DataFrame:
    """A test's own SQL on a store (a path or a ``StoreRef``), through the locked-down reader."""
    from agg2exp_core.store import queries

    with store.open_reader(getattr(store_or_ref, "path", store_or_ref)) as con:
        return queries.fetch(con, sql, params)
