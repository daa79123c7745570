"""A realistic synthetic DuckDB store for dashboard tests and benchmarks.

``build_synthetic_store`` fills every table of the schema (``agg2exp_core.store``) with a
cohort that behaves like the demo: 17 thorax classes plus the two pathology RoIs,
datasets ``reference`` (train/test) and ``external`` (with pleural effusion and
consolidation), sex and age (a few unknown), Dice, Isolation-Forest-like anomaly
scores, the Spearman and inlier/outlier tables, attribution-method metrics,
perturbation curves and small slice artefacts in the format of docs/ARCHITECTURE.md.

Planted effects (the tests look for them): female cases put more of the heart's mass on
the aorta; external cases with a pathology put mass on the pathology RoIs.

Writes go through ``agg2exp_core.store`` (``open_writer``, ``upsert_rois``,
``upsert_cases``, ``ensure_run``, ``write_case``, ``record_failure``,
``replace_table_rows``), except the long ``local_importance`` rows, which are inserted
as one frame per run (``write_case`` inserts row by row, minutes for 2,000 cases). For
big stores (``bulk``) the other per-case rows of ``write_case`` are also inserted as
frames; a test checks both paths write the same tables.
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
EVAL_METRICS = ("faithfulness", "sensitivity_max", "sensitivity_avg", "complexity", "efficiency_s",
                "aopc_morf", "aopc_lerf", "abpc")
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
                          run_methods: Sequence[str] = ("vg",), bulk: bool | None = None) -> dict:
    """Build (or replace) a synthetic store at ``path``; return what was written.

    ``with_artifacts``: True for a slice artefact per case, an int ``k`` for the first ``k``
    cases by id only (keeps big benchmark stores small). ``bulk`` (default: more than 200
    cases) writes the per-case rows of ``store.write_case`` as one frame per table.

    Returns ``{"path", "run_ids" (method -> run id), "case_ids", "class_names", "roi_ids"
    (name -> id), "n_cases", "artifact_root"}``.
    """
    path = Path(path)
    for stale in (path, store.writing_path(path)):
        stale.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    class_names = list(THORAX_LABELS)
    cases = _cases(n_cases, rng)
    base = _base_matrix(class_names, rng)
    run_ids: dict[str, str] = {}
    with store.open_writer(path) as con:
        roi_ids = store.upsert_rois(con, roi_specs(class_names, PATHOLOGY_ROIS))
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
                       with_artifacts, np.random.default_rng(seed + 7 + k),
                       bulk=n_cases > 200 if bulk is None else bulk)
            _write_analysis(con, run_id, cases, cube_abs, dice, class_names, roi_ids, method,
                            np.random.default_rng(seed + 13 + k))
    return {"path": path, "run_ids": run_ids, "case_ids": cases.case_id.tolist(), "class_names": class_names,
            "roi_ids": roi_ids, "n_cases": n_cases, "artifact_root": path.parent / "artifacts"}


def _cases(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Case metadata: ~70 % reference (train/test), ~30 % external with pathologies."""
    n_external = max(2, int(round(0.3 * n)))
    rows = []
    for i in range(n):
        external = i >= n - n_external
        sex = rng.choice(["F", "M"])
        age = float(np.clip(rng.normal(58, 15), 18, 92).round())
        pathologies = []
        if external:
            if rng.random() < 0.45:
                pathologies.append("pleural_effusion")
            if rng.random() < 0.35:
                pathologies.append("consolidation")
        rows.append({"case_id": f"{'ext' if external else 'ref'}{i:04d}",
                     "dataset": "external" if external else "reference",
                     "split": "test" if external or rng.random() < 0.4 else "train",
                     "sex": sex, "age": age, "image_path": f"images/case{i:04d}.nii.gz",
                     "label_path": f"labels/case{i:04d}.nii.gz", "pathologies": ";".join(pathologies)})
    frame = pd.DataFrame(rows)
    unknown = rng.choice(n, size=max(1, n // 30), replace=False)     # a few cases without metadata
    frame = frame.astype({"sex": object, "age": object})
    frame.loc[unknown, ["sex", "age"]] = None
    return frame


def _base_matrix(class_names: list[str], rng: np.random.Generator) -> np.ndarray:
    """Cohort-typical importance of each class source (columns) for each target (rows)."""
    n = len(class_names)
    base = rng.gamma(0.6, 1.0, size=(n, n)) * 0.04
    idx = {name: i for i, name in enumerate(class_names)}
    for i in range(n):
        base[i, i] = rng.uniform(0.5, 1.4)
        base[i, idx["background"]] += 0.15
    neighbours = [("pulmonary_vein", "heart", 0.35), ("pulmonary_vein", "lung_lower_lobe_left", 0.2),
                  ("pulmonary_vein", "lung_lower_lobe_right", 0.2), ("aorta", "heart", 0.25),
                  ("heart", "aorta", 0.2), ("ribs", "costal_cartilages", 0.1), ("sternum", "costal_cartilages", 0.2),
                  ("autochthon_left", "vertebrae", 0.2), ("autochthon_right", "vertebrae", 0.2),
                  ("trachea", "thyroid_gland", 0.1), ("thyroid_gland", "trachea", 0.25)]
    for target, source, weight in neighbours:
        base[idx[target], idx[source]] += weight
    return base / base.sum(axis=1, keepdims=True)


def _local_matrices(cases: pd.DataFrame, base: np.ndarray, class_names: list[str],
                    rng: np.random.Generator) -> np.ndarray:
    """abs masses ``[cases, targets, class sources + pathology sources]``."""
    n, l = len(cases), base.shape[0]
    idx = {name: i for i, name in enumerate(class_names)}
    cube = np.zeros((n, l, l + len(PATHOLOGY_ROIS)))
    for c, case in enumerate(cases.itertuples()):
        prior = base.copy()
        if case.sex == "F":     # planted effect: heart -> aorta
            prior[idx["heart"], idx["aorta"]] += 0.15
        if case.age is not None and not pd.isna(case.age):
            prior[idx["ribs"], idx["vertebrae"]] += 0.001 * max(case.age - 40, 0)
        prior /= prior.sum(axis=1, keepdims=True)
        rows = np.stack([rng.dirichlet(80 * p + 1e-3) for p in prior])
        cube[c, :, :l] = rows
        for j, name in enumerate(PATHOLOGY_ROIS):
            if name in (case.pathologies or "").split(";"):
                lung_mass = rows[:, [idx[k] for k in class_names if k.startswith("lung")]].sum(axis=1)
                cube[c, :, l + j] = lung_mass * rng.uniform(0.05, 0.35, size=l)
    return cube


def _dice(cases: pd.DataFrame, class_names: list[str], roi_ids: dict[str, int],
          rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for case in cases.itertuples():
        penalty = 0.05 if case.dataset == "external" else 0.0
        for name in class_names:
            base = 0.99 if name == "background" else 0.88
            lung_hit = 0.08 if name.startswith("lung") and case.pathologies else 0.0
            dice = float(np.clip(base - penalty - lung_hit + rng.normal(0, 0.04), 0.2, 0.999))
            rows.append({"case_id": case.case_id, "class_id": roi_ids[name], "dice": dice})
    return pd.DataFrame(rows)


def _write_run(con, path: Path, run_id: str, cases: pd.DataFrame, cube_abs: np.ndarray,
               class_names: list[str], roi_ids: dict[str, int], dice: pd.DataFrame | None,
               with_artifacts: bool | int, rng: np.random.Generator, bulk: bool) -> None:
    targets = [roi_ids[n] for n in class_names]
    sources = targets + [roi_ids[n] for n in PATHOLOGY_ROIS]
    dice_by_case = dict(tuple(dice.groupby("case_id"))) if dice is not None else {}
    n_artifacts = len(cases) if with_artifacts is True else int(with_artifacts or 0)
    with_slices = set(sorted(cases.case_id)[:n_artifacts])
    status, dice_rows, artifacts = [], [], []
    for case in cases.itertuples():
        artifact = None
        if case.case_id in with_slices:
            artifact = f"artifacts/{run_id}/{case.case_id}.npz"
            _write_artifact(path.parent / artifact, case, class_names, rng)
            artifacts.append([run_id, case.case_id, artifact])
        case_dice = dice_by_case.get(case.case_id)
        rows = ([[MODEL_SHA, case.case_id, int(r.class_id), float(r.dice)] for r in case_dice.itertuples()]
                if case_dice is not None else [])
        seconds = float(rng.uniform(2, 6))
        if bulk:
            status.append([run_id, case.case_id, seconds])
            dice_rows += rows
        else:
            store.write_case(con, run_id, case.case_id, rows=[], dice_rows=rows, artifact_path=artifact,
                             seconds=seconds)
    if bulk:     # the rows write_case writes, one frame per table (write_case costs ~50 ms per case)
        _insert(con, "case_status", pd.DataFrame(status, columns=["run_id", "case_id", "seconds"]).assign(
            finished_at=pd.Timestamp.now(tz="UTC").tz_localize(None)))
        _insert(con, "dice", pd.DataFrame(dice_rows, columns=["model_sha256", "case_id", "class_id", "dice"]))
        _insert(con, "artifacts", pd.DataFrame(artifacts, columns=["run_id", "case_id", "path"]))
    # Signed variants: the positive and negative parts spread a little differently.
    pos = np.stack([rng.dirichlet(60 * r + 1e-3) if r.sum() else r for r in cube_abs.reshape(-1, cube_abs.shape[2])])
    neg = np.stack([rng.dirichlet(40 * r + 1e-3) if r.sum() else r for r in cube_abs.reshape(-1, cube_abs.shape[2])])
    n, l, r = cube_abs.shape
    frame = pd.DataFrame({
        "run_id": run_id,
        "case_id": np.repeat(cases.case_id.to_numpy(), l * r),
        "target_id": np.tile(np.repeat(targets, r), n).astype("int32"),
        "source_id": np.tile(sources, n * l).astype("int32"),
        "mass_abs": cube_abs.ravel(), "mass_pos": pos.ravel(), "mass_neg": neg.ravel()})
    # One case that failed in this run (the failures table), with no results.
    store.record_failure(con, run_id, "failed0000", "explain", "synthetic failure: out of memory")
    con.execute("DELETE FROM local_importance WHERE run_id = ?", [run_id])
    _insert(con, "local_importance", frame)


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
        centre = np.asarray(centre) + jitter
        inside = sum(((u[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1
        labels[inside & body] = idx[name]
        ct[inside & body] = _HU["lung"] if name.startswith("lung") else _HU.get(name, 40)
    labels[ribs] = idx["ribs"]
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
                    class_names: list[str], roi_ids: dict[str, int], method: str,
                    rng: np.random.Generator) -> None:
    """anomaly, anomaly_dice, outlier_tests, method_eval and perturbation_curve of one run."""
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

    profile = METHOD_PROFILE.get(method, METHOD_PROFILE["vg"])
    eval_cases = cases.case_id[cases.split == "test"].head(8).tolist()
    eval_targets = targets[1:8]
    rows_me, rows_pc = [], []
    for case_id in eval_cases:
        for target in eval_targets:
            values = {"faithfulness": rng.normal(profile["faith"], 0.12),
                      "sensitivity_max": abs(rng.normal(profile["sens"], 0.2)),
                      "sensitivity_avg": abs(rng.normal(profile["sens"] * 0.6, 0.1)),
                      "complexity": float(np.clip(rng.normal(profile["compl"], 0.05 * profile["compl"] + 1e-4), 0, 1)),
                      "efficiency_s": abs(rng.normal(profile["secs"], 0.3 * profile["secs"]))}
            decay = 4 + 6 * profile["faith"] + rng.normal(0, 0.5)
            fractions = np.linspace(0, 1, 11)
            morf = np.exp(-decay * fractions) + rng.normal(0, 0.02, 11)
            lerf = 1 - 0.4 * fractions ** 2 + rng.normal(0, 0.02, 11)
            values["aopc_morf"] = float(np.mean(1 - morf))
            values["aopc_lerf"] = float(np.mean(1 - lerf))
            values["abpc"] = float(np.mean(lerf - morf))
            rows_me += [[run_id, case_id, target, metric, float(values[metric])] for metric in EVAL_METRICS]
            for ordering, curve in (("morf", morf), ("lerf", lerf)):
                rows_pc += [[run_id, case_id, target, ordering, step, float(f), float(v)]
                            for step, (f, v) in enumerate(zip(fractions, curve))]
    store.replace_table_rows(con, "method_eval", run_id, pd.DataFrame(
        rows_me, columns=["run_id", "case_id", "target_id", "metric", "value"]))
    store.replace_table_rows(con, "perturbation_curve", run_id, pd.DataFrame(
        rows_pc, columns=["run_id", "case_id", "target_id", "ordering", "step", "fraction", "value"]))
