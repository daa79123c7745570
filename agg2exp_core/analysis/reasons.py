"""Why is a case an outlier? The matrix cells that drive its anomaly score, class by class.

The Isolation Forest of class a (the same forest as the run's outlier analysis: same
rows, settings and seed, read back from ``analysis_settings``) is explained with SHAP's
``TreeExplainer``, which supports scikit-learn's ``IsolationForest`` exactly: it explains
the forest's mean path length ``E[h(x)]``, and the anomaly score is ``2^(-E[h(x)]/c(n))``,
decreasing in it. A short path means "isolated quickly", so a cell's contribution to the
anomaly is **minus** its SHAP value, in path-length units (tree depths):

    Σ_b contribution_b = E[h] over the forest's background - E[h(x)]     (exact, per case)

Positive = this cell's value made the case easier to isolate (more anomalous). Cells are
the case's masses ``e_{b->a}`` in the model's class regions (the forest's features).
Explaining every case costs about as much as 200 trees x cases; large cohorts explain the
``max_cases`` most anomalous cases of each class (all cases of small cohorts).
"""
from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agg2exp_core import store
from agg2exp_core.analysis import outliers


@dataclass(frozen=True)
class ReasonsConfig:
    max_cases: int = 500     # most anomalous cases explained per class


def tree_contributions(forest, x: np.ndarray) -> tuple[np.ndarray, float]:
    """(contributions ``[cases, features]`` to the anomaly, the forest's expected path length)."""
    explainer = _shap().TreeExplainer(forest)
    values = np.asarray(explainer.shap_values(x), dtype=float)
    return -values, float(np.ravel(explainer.expected_value)[0])


def _shap():
    """shap, imported on first use (heavy: numba; only the analyses that explain forests need it).

    The first import runs on a thread of its own: shap keeps the import errors of its optional
    extras (cv2, pyspark, its GPU module) in a module dict, tracebacks included, and their
    frames reach back through the importer's callers. Imported from ``outlier_reasons(con, ...)``
    that pinned the caller's DuckDB connection until the interpreter exited (nanobind's
    "leaked instances / types / functions" lines at the end of ``analyze`` and the demo build).
    """
    if "shap" not in sys.modules:
        importer = threading.Thread(target=importlib.import_module, args=("shap",), name="import-shap")
        importer.start()
        importer.join()
    import shap

    return shap


def outlier_reasons(con, run_id: str, config: ReasonsConfig = ReasonsConfig()) -> pd.DataFrame:
    """Contributions of every (case, class, source cell) to the case's anomaly score; written to the store."""
    settings = outliers.stored_config(con, run_id)
    inputs = outliers.fit_cases(con, run_id, settings)
    case_ids, sources, fit = inputs.case_ids, inputs.sources, inputs.fit
    frames = []
    for t_index, target in enumerate(inputs.targets):
        x, present = outliers.forest_inputs(inputs.features[:, t_index, :], settings)
        if (fit & present).sum() < 2:
            continue
        forest = outliers.fit_forest(x[fit & present], settings)
        chosen = np.flatnonzero(present)
        if len(chosen) > config.max_cases:
            scores = -forest.score_samples(x[chosen])
            chosen = chosen[np.argsort(-scores, kind="stable")[:config.max_cases]]
        contributions, _ = tree_contributions(forest, x[chosen])
        frames.append(pd.DataFrame({
            "case_id": np.repeat(np.asarray(case_ids)[chosen], len(sources)), "target_id": int(target),
            "source_id": np.tile(sources, len(chosen)), "contribution": contributions.ravel()}))
    reasons = (pd.concat(frames, ignore_index=True) if frames else
               pd.DataFrame(columns=["case_id", "target_id", "source_id", "contribution"]))
    store.replace_analysis(con, run_id, {"outlier_reasons": reasons.assign(run_id=run_id)[
        ["run_id", "case_id", "target_id", "source_id", "contribution"]]})
    return reasons


def top_reasons(reasons: pd.DataFrame, case_id: str, target_id: int, k: int = 5) -> pd.DataFrame:
    """The ``k`` cells that push one case's score for one class most toward anomalous."""
    rows = reasons[(reasons.case_id == case_id) & (reasons.target_id == target_id)]
    return rows.sort_values(["contribution", "source_id"], ascending=[False, True]).head(k).reset_index(drop=True)
