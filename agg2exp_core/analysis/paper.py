"""The paper's own outlier analysis (Section 4.3 and Appendix C.1 of Agg2Exp), for parity checks.

Settings as the paper ran them: one scikit-learn ``IsolationForest`` per class with 100
trees and ``contamination="auto"``; a case whose class is absent has no row for that
class (dropped, not scored as zeros). Its anomaly score is scikit-learn's
``score_samples`` / ``decision_function``: **higher = more normal**, so its Spearman rho
with Dice is positive where the store's convention (higher = more anomalous) gives a
negative rho. The store keeps its convention; parity tables show rho in the paper's.

Its sex/age tests: outliers are the union over labels (a case flagged by any class's
forest) against the inliers, on the external cohort; sex by Fisher's exact test, age by
Mann-Whitney U (the paper names no tests), Holm-corrected beside the raw p-values.

One seed decides too much on 32 cases (the averages' rho moved from -0.34 to 0.06 over 50 seeds
in simulation), so parity averages the scores of ``PAPER_SEEDS`` = 20 forests per class (each the
paper's 100 trees) and reports the spread of the single seeds' rho beside it (``seed_spread``);
the 17 per-label p-values get Holm and Benjamini-Hochberg adjustments beside the raw ones.

Table 2 of the paper (Spearman of anomaly vs Dice per label on TSV2, forests fitted on
490 TSV2 training scans) and its p ≈ 0.0024 for the averages are in ``PAPER_TABLE2``.
The published aggregates hold only the 32 test scans, so a parity run fits on them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from agg2exp_core import store
from agg2exp_core.analysis import outliers
from agg2exp_core.labels import NAME_ALIASES
from agg2exp_core.vocabulary import AVERAGE_TARGET, UNION_TARGET

PAPER_SCORE_CONVENTION = ("paper: IsolationForest.score_samples, higher = more normal (rho with Dice > 0 where "
                          "anomalies segment worse); stored: its negative, higher = more anomalous")
# Table 2: label -> (p-value, Spearman rho), rho in the paper's convention.
PAPER_TABLE2: dict[str, tuple[float, float]] = {
    "lung_lower_lobe_right": (0.000194, 0.613), "lung_upper_lobe_right": (0.000354, 0.592),
    "background": (0.000432, 0.585), "costal_cartilages": (0.00431, 0.491),
    "lung_middle_lobe_right": (0.0083, 0.459), "heart": (0.0181, 0.415), "sternum": (0.0324, 0.379),
    "autochthon_left": (0.0399, 0.365), "ribs": (0.129, 0.274), "lung_upper_lobe_left": (0.13, 0.273),
    "autochthon_right": (0.139, 0.267), "trachea": (0.145, 0.264), "lung_lower_lobe_left": (0.306, 0.187),
    "aorta": (0.446, -0.14), "thyroid_gland": (0.463, -0.135), "pulmonary_vein": (0.55, 0.11),
    "vertebrae": (0.842, 0.0367),
}
PAPER_AVERAGE_P = 0.0024
PAPER_SEEDS = 20
PARITY_COLUMNS = ["target_id", "label", "spearman_rho", "p_value", "paper_rho", "paper_p_value", "n"]


def paper_config(fit_dataset: str | None = None, fit_split: str | None = "train", seed: int = 0,
                 n_seeds: int = PAPER_SEEDS) -> outliers.AnalysisConfig:
    return outliers.AnalysisConfig(fit_dataset=fit_dataset, fit_split=fit_split, contamination="auto",
                                   n_estimators=100, random_state=seed, absent="drop", n_seeds=n_seeds,
                                   kind="abs")  # the paper's rows are raw masses


def seed_spread(seed_spearman: list[pd.DataFrame], convention_sign: float = -1.0) -> dict[str, float]:
    """Spread over single seeds of the averages' rho (paper's convention) and how many seeds give p < 0.05."""
    rows = [t[t.target_id == AVERAGE_TARGET] for t in seed_spearman]
    rho = np.array([convention_sign * r.spearman_rho.iloc[0] for r in rows if len(r)], dtype=float)
    p = np.array([r.p_value.iloc[0] for r in rows if len(r)], dtype=float)
    if not len(rho):
        return {}
    return {"seeds": float(len(rho)), "seed_rho_min": float(np.nanmin(rho)), "seed_rho_max": float(np.nanmax(rho)),
            "seed_rho_sd": float(np.nanstd(rho, ddof=1)) if len(rho) > 1 else float("nan"),
            "seeds_significant": float((p < 0.05).sum())}


def with_adjusted_p(table: pd.DataFrame) -> pd.DataFrame:
    """A parity table with Holm (``p_holm``) and BH (``q_bh``) adjustments over its per-label rows
    (the averages' row is its own test and keeps its raw p)."""
    from agg2exp_core.analysis.compare import benjamini_hochberg

    labels = (table.target_id != AVERAGE_TARGET).to_numpy()
    out = table.assign(p_holm=table.p_value.to_numpy(dtype=float), q_bh=table.p_value.to_numpy(dtype=float))
    out.loc[labels, "p_holm"] = holm(table.p_value[labels].to_numpy(dtype=float))
    out.loc[labels, "q_bh"] = benjamini_hochberg(table.p_value[labels].to_numpy(dtype=float))
    return out


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        out[index] = running
    return out


def union_group_tests(anomaly: pd.DataFrame, meta: pd.DataFrame, cases: set[str]) -> pd.DataFrame:
    """Outliers of any class vs inliers among ``cases``: sex (Fisher exact) and age (Mann-Whitney U)."""
    per_class = anomaly[(anomaly.target_id >= 0) & anomaly.case_id.isin(cases)]
    flagged = per_class.groupby("case_id").is_outlier.any()
    union = pd.DataFrame({"case_id": flagged.index, "target_id": UNION_TARGET, "score": np.nan,
                          "is_outlier": flagged.to_numpy()})
    return outliers.group_tests(union, meta)


def adjusted(tests: pd.DataFrame) -> pd.DataFrame:
    """The tests with Holm-adjusted p-values (one family: the rows given)."""
    return tests.assign(p_holm=holm(tests.p_value.to_numpy()) if len(tests) else [])


def parity_table(spearman: pd.DataFrame, names: dict[int, str], convention_sign: float = -1.0) -> pd.DataFrame:
    """Our Spearman per label beside Table 2 (rho in the paper's convention: ``convention_sign`` x stored)."""
    rows = []
    for target, rho, p, n in zip(spearman.target_id, spearman.spearman_rho, spearman.p_value, spearman.n):
        label = "average" if int(target) == AVERAGE_TARGET else NAME_ALIASES.get(names.get(int(target), ""),
                                                                                names.get(int(target), ""))
        paper_p, paper_rho = ((PAPER_AVERAGE_P, np.nan) if label == "average" else PAPER_TABLE2.get(label, (np.nan,
                                                                                                            np.nan)))
        rows.append([int(target), label, convention_sign * rho, p, paper_rho, paper_p, int(n)])
    return with_adjusted_p(pd.DataFrame(rows, columns=PARITY_COLUMNS))


def parity_summary(table: pd.DataFrame, alpha: float = 0.05) -> dict[str, float]:
    """How closely a parity table reproduces Table 2: rank agreement of the per-label rho, shared
    significant labels, and the averages' p-value."""
    labels = table[(table.target_id != AVERAGE_TARGET) & table.paper_rho.notna() & table.spearman_rho.notna()]
    average = table[table.target_id == AVERAGE_TARGET]
    ours, theirs = labels.p_value < alpha, labels.paper_p_value < alpha
    return {"labels": float(len(labels)),
            "rho_rank_agreement": float(stats.spearmanr(labels.spearman_rho, labels.paper_rho)[0])
            if len(labels) >= 3 else float("nan"),
            "mean_abs_rho_difference": float(np.abs(labels.spearman_rho - labels.paper_rho).mean()),
            "significant_both": float((ours & theirs).sum()), "significant_paper": float(theirs.sum()),
            "significant_ours": float(ours.sum()),
            "average_rho": float(average.spearman_rho.iloc[0]) if len(average) else float("nan"),
            "average_p": float(average.p_value.iloc[0]) if len(average) else float("nan")}


def paper_analysis(con, run_id: str, fit_dataset: str | None = None, fit_split: str | None = "train",
                   external: str | None = None, seed: int = 0, n_seeds: int = PAPER_SEEDS) -> dict:
    """The paper's analysis of a run, written (anomaly tables, union tests, parity) in one transaction.

    ``external``: dataset of the sex/age tests (default: every case outside the fit cases).
    """
    config = paper_config(fit_dataset, fit_split, seed, n_seeds)
    result = outliers.compute(con, run_id, config)
    meta = result["meta"]
    fitted = set(meta.case_id[outliers.fit_mask(meta, config)]) if not result["fit_fallback"] else set()
    cases = (set(meta.case_id[meta.dataset == external]) if external else set(meta.case_id) - fitted) or set(
        meta.case_id)
    union = adjusted(union_group_tests(result["anomaly"], meta, cases))
    result["tests"] = pd.concat([result["tests"], union.drop(columns="p_holm")], ignore_index=True)
    result["union_tests"] = union
    result["parity"] = parity_table(result["spearman"], store.roi_names(con))
    result["parity_summary"] = {**parity_summary(result["parity"]), **seed_spread(result["seed_spearman"])}
    outliers.write(con, result, config, extra={"paper_parity": result["parity"][PARITY_COLUMNS]})
    return result


def run_paper_analysis(db: str | Path, run_id: str | None = None, **kwargs) -> dict:
    """``analyze --paper``: open the store, run ``paper_analysis``, publish."""
    with store.open_writer(outliers.existing_store(db)) as con:
        return paper_analysis(con, outliers.resolve_run(con, db, run_id), **kwargs)


def reproduces_table2(summary: dict[str, float], p_limit: float = 0.01, agreement: float = 0.5) -> bool:
    """Whether a parity summary reproduces the paper's finding: the averages correlate in the paper's
    direction at p < ``p_limit`` and the per-label rho rank like Table 2's (Spearman > ``agreement``)."""
    return bool(summary["average_rho"] > 0 and summary["average_p"] < p_limit
                and summary["rho_rank_agreement"] > agreement)
