"""Features of the label-free Dice estimate, per case and class, in three groups:

- ``explanation`` (last round's): novelty of the explanation: L1 distance of the class row
  ``E_x[a, :]`` to the reference cases' median row, its mean over classes, the mean L1 distance of
  the whole matrix to its ``k`` nearest reference cases (reference cases leave-one-out), and the
  run's Isolation-Forest scores when analysed. When predicted volumes are known these are
  volume-adjusted: the part a linear fit on the class's predicted log-volume ratio explains (on
  reference cases) is removed, so the group carries what volume alone does not;
- ``volume`` (the prediction): per class the signed and absolute log-ratio of the predicted volume
  to the reference median and its connected components, per case the mean absolute ratio and the
  components of the whole label map (from the slice artefacts);
- ``uncertainty``: the model's own uncertainty (test-time augmentation / fold ensemble) from the
  ``case_uncertainty`` table, one feature per name stored for the run's model.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist
from sklearn.linear_model import LinearRegression

from agg2exp_core import store
from agg2exp_core.analysis.masses import comparison_cube
from agg2exp_core.store.queries.uncertainty import uncertainty_features
from agg2exp_core.vocabulary import AVERAGE_TARGET

EXPLANATION, VOLUME, UNCERTAINTY = "explanation", "volume", "uncertainty"
GROUPS = (UNCERTAINTY, EXPLANATION, VOLUME)


@dataclass
class QualityInputs:
    """Everything the estimate needs, ``[cases, classes, features]`` and the true Dice (NaN unknown)."""

    case_ids: list[str]
    class_ids: list[int]
    features: np.ndarray
    names: list[str]
    dice: np.ndarray
    novelty: np.ndarray          # [cases, classes]: the interval scale's raw value
    datasets: np.ndarray
    splits: np.ndarray
    groups: dict[str, str] = field(default_factory=dict)   # feature name -> group (absent: explanation)

    def group_of(self, name: str) -> str:
        return self.groups.get(name, EXPLANATION)

    def select(self, groups: tuple[str, ...]) -> "QualityInputs":
        """The same cases with only the features of ``groups`` (none: the constant model)."""
        keep = [j for j, n in enumerate(self.names) if self.group_of(n) in groups]
        return QualityInputs(self.case_ids, self.class_ids, self.features[..., keep], [self.names[j] for j in keep],
                             self.dice, self.novelty, self.datasets, self.splits, self.groups)


def prediction_features(pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(voxel count, connected components) of every class of a predicted label map."""
    volumes = np.bincount(np.asarray(pred).ravel().astype(np.int64), minlength=n_classes)[:n_classes]
    components = np.array([ndimage.label(pred == c)[1] if volumes[c] else 0 for c in range(n_classes)])
    return volumes.astype(float), components.astype(float)


def artifact_features(folder: str | Path, paths: dict[str, str], case_ids: list[str],
                      n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Volumes and components ``[cases, channels]`` from the slice artefacts (None unless every case has one)."""
    if not case_ids or any(c not in paths for c in case_ids):
        return None
    volumes, components = np.zeros((len(case_ids), n_classes)), np.zeros((len(case_ids), n_classes))
    for i, case_id in enumerate(case_ids):
        try:
            with np.load(Path(folder) / paths[case_id], allow_pickle=False) as npz:
                volumes[i], components[i] = prediction_features(npz["pred"], n_classes)
        except (OSError, KeyError, ValueError):
            return None
    return volumes, components


def novelty_features(cube: np.ndarray, reference: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(L1 distance of each class row to the reference median row ``[cases, classes]``,
    mean L1 distance of the whole matrix to the k nearest reference cases ``[cases]``).

    ``reference``: indices of the reference cases; they are measured leave-one-out.
    """
    rows = np.nan_to_num(cube, nan=0.0)
    flat = rows.reshape(len(rows), -1)
    reference = np.asarray(reference)
    to_median = np.abs(rows - np.median(rows[reference], axis=0)).sum(axis=2)
    for i in reference:                      # a reference case against the others only
        to_median[i] = np.abs(rows[i] - np.median(rows[reference[reference != i]], axis=0)).sum(axis=1)
    pairwise = cdist(flat, flat[reference], "cityblock")                     # [cases, reference]
    pairwise[reference, np.arange(len(reference))] = np.inf                   # not its own neighbour
    nearest = np.sort(pairwise, axis=1)[:, :k]
    return to_median, np.where(np.isfinite(nearest), nearest, np.nan).mean(axis=1)


def volume_adjusted(values: np.ndarray, volume: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values [cases, classes]`` less what a per-class linear fit on ``volume`` (reference cases) explains."""
    adjusted = values.copy()
    for j in range(values.shape[1]):
        x, y = volume[reference, j:j + 1], values[reference, j]
        if len(y) >= 5 and np.ptp(x) > 0:
            line = LinearRegression().fit(x, y)
            adjusted[:, j] = values[:, j] - line.predict(volume[:, j:j + 1]) + y.mean()
    return adjusted


def build_inputs(con, run_id: str, config) -> QualityInputs:
    """Features of every case and class of a run, from the store (and the run's artefacts)."""
    _, case_ids, targets, sources, cube = comparison_cube(con, run_id, config.kind)
    class_ids = store.class_roi_ids(con)
    cube = cube[:, :, [j for j, s in enumerate(sources) if s in class_ids]]
    meta = store.case_metadata(con, case_ids)
    datasets, splits = meta.dataset.astype(str).to_numpy(), meta.split.fillna("").astype(str).to_numpy()
    reference = reference_mask(datasets, config.fit_dataset)
    members = np.flatnonzero(reference)
    if len(members) > config.max_reference:
        members = np.sort(np.random.default_rng(config.seed).choice(members, config.max_reference, replace=False))
    to_median, neighbours = novelty_features(cube, members, config.k_neighbours)
    explanation = {"row_distance": to_median, "mean_row_distance": per_case(to_median.mean(axis=1), targets),
                   "nearest_reference": per_case(neighbours, targets)}
    explanation.update(_anomaly_columns(con, run_id, case_ids, targets))
    volume = _prediction_columns(con, run_id, case_ids, targets, reference)
    if "class_volume_ratio" in volume and config.volume_adjust:
        explanation = {name: volume_adjusted(values, volume["class_volume_ratio"], reference)
                       for name, values in explanation.items()}
    uncertainty = uncertainty_columns(con, store.run_model(con, run_id), case_ids, targets, reference)
    columns = {**explanation, **volume, **uncertainty}
    groups = {**{n: EXPLANATION for n in explanation}, **{n: VOLUME for n in volume},
              **{n: UNCERTAINTY for n in uncertainty}}
    names = list(columns)
    return QualityInputs(case_ids, list(targets), np.stack([columns[n] for n in names], axis=-1), names,
                         true_dice(con, run_id, case_ids, targets), to_median, datasets, splits, groups)


def true_dice(con, run_id: str, case_ids: list[str], targets) -> np.ndarray:
    dice = np.full((len(case_ids), len(targets)), np.nan)
    frame = store.dice_of_model(con, store.run_model(con, run_id))
    index, t_index = {c: i for i, c in enumerate(case_ids)}, {t: j for j, t in enumerate(targets)}
    for case_id, target, value in zip(frame.case_id, frame.target_id, frame.dice):
        if case_id in index and int(target) in t_index:
            dice[index[case_id], t_index[int(target)]] = value
    return dice


def reference_mask(datasets: np.ndarray, fit_dataset: str | None) -> np.ndarray:
    if fit_dataset is None:
        return np.ones(len(datasets), dtype=bool)
    return datasets == fit_dataset


def per_case(values: np.ndarray, targets) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=float)[:, None], len(targets), axis=1)


def uncertainty_columns(con, model_sha256, case_ids, targets, reference) -> dict[str, np.ndarray]:
    """One ``[cases, classes]`` column per stored uncertainty feature; a missing value (undefined, e.g. a
    class not predicted) takes the reference cases' median of its class (a feature no reference case has
    for some class is left out)."""
    if not model_sha256:
        return {}
    wide = uncertainty_features(con, model_sha256, case_ids)
    wide = wide[wide.class_id.isin(list(targets))]
    columns = {}
    for name in sorted(c for c in wide.columns if c not in ("case_id", "class_id")):
        grid = wide.pivot_table(index="case_id", columns="class_id", values=name, aggfunc="first", dropna=False)
        values = grid.reindex(index=case_ids, columns=list(targets)).to_numpy(dtype=float)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")          # a class no reference case has: NaN, the feature is left out
            fill = np.nanmedian(np.where(reference[:, None], values, np.nan), axis=0)
        if not np.isfinite(fill).all():
            continue
        columns[f"u_{name}"] = np.where(np.isfinite(values), values, fill[None, :])
    return columns


def _anomaly_columns(con, run_id, case_ids, targets) -> dict[str, np.ndarray]:
    scores = store.anomaly_scores(con, run_id)
    if scores.empty:
        return {}
    wide = scores.pivot_table(index="case_id", columns="target_id", values="score").reindex(case_ids)
    if AVERAGE_TARGET not in wide.columns or wide[AVERAGE_TARGET].isna().any():
        return {}
    per_class = wide.reindex(columns=list(targets)).to_numpy(dtype=float)
    per_class = np.where(np.isfinite(per_class), per_class, np.nanmax(per_class))   # absent class: most anomalous
    return {"anomaly": per_class, "mean_anomaly": per_case(wide[AVERAGE_TARGET].to_numpy(float), targets)}


def _prediction_columns(con, run_id, case_ids, targets, reference) -> dict[str, np.ndarray]:
    names = store.run_label_names(con, run_id)
    found = artifact_features(store.store_folder(con), store.artifact_paths(con, run_id), case_ids, len(names))
    if found is None:
        return {}
    volumes, components = found
    ratio = np.log((volumes + 1.0) / (np.median(volumes[reference], axis=0) + 1.0))
    channels = [int(t) if 0 <= int(t) < len(names) else 0 for t in targets]
    return {"components": per_case(np.log1p(components[:, 1:].sum(axis=1)), targets),
            "volume_deviation": per_case(np.abs(ratio[:, 1:]).mean(axis=1), targets),
            "class_volume_ratio": ratio[:, channels], "class_volume_deviation": np.abs(ratio[:, channels]),
            "class_components": np.log1p(components[:, channels])}
