"""Plain-text summaries of an ``analyze`` run, for the command line (what was computed and found)."""
from __future__ import annotations

import numpy as np

from agg2exp_core.analysis import paper
from agg2exp_core.vocabulary import AVERAGE_TARGET


def _num(value, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}g}"


def paper_lines(result: dict) -> list[str]:
    lines = ["paper settings: IsolationForest(n_estimators=100, contamination='auto'), absent classes dropped; "
             f"score convention: {paper.PAPER_SCORE_CONVENTION}"]
    if result.get("fit_fallback"):
        lines.append("note: no reference split among the run's cases, so the forests were fitted on the cohort "
                     "itself (the paper fitted on 490 TSV2 training scans)")
    lines.append(f"{'label':<24} {'rho':>7} {'p':>9} {'p Holm':>9} {'q BH':>9} {'paper rho':>9} {'paper p':>9}")
    for row in result["parity"].itertuples():
        lines.append(f"{row.label:<24} {_num(row.spearman_rho):>7} {_num(row.p_value):>9} "
                     f"{_num(getattr(row, 'p_holm', float('nan'))):>9} {_num(getattr(row, 'q_bh', float('nan'))):>9} "
                     f"{_num(row.paper_rho):>9} {_num(row.paper_p_value):>9}")
    summary = result["parity_summary"]
    if "seeds" in summary:
        lines.append(f"scores averaged over {summary['seeds']:.0f} forest seeds; a single seed's averages' rho ranges "
                     f"{_num(summary['seed_rho_min'])} to {_num(summary['seed_rho_max'])} (SD "
                     f"{_num(summary['seed_rho_sd'])}), p < 0.05 for {summary['seeds_significant']:.0f} of them")
    lines.append(f"parity: rank agreement of the per-label rho with Table 2 = {_num(summary['rho_rank_agreement'])}, "
                 f"labels significant in both = {summary['significant_both']:.0f} of the paper's "
                 f"{summary['significant_paper']:.0f}, averages' p = {_num(summary['average_p'])} "
                 f"(paper ≈ {paper.PAPER_AVERAGE_P})")
    for row in result["union_tests"].itertuples():
        lines.append(f"outliers of any class vs inliers, {row.variable} ({row.test}): p = {_num(row.p_value)}, "
                     f"Holm-adjusted p = {_num(row.p_holm)} (inliers {row.n_inliers}, outliers {row.n_outliers})")
    return lines


def drift_lines(result) -> list[str]:
    lines = []
    for dataset, tests in result.tests.groupby("dataset"):
        drifted = tests[tests.q_value < 0.05]
        lines.append(f"drift of {dataset} vs {result.reference}: {len(drifted)} of {len(tests)} classes at q < 0.05 "
                     f"(energy distance, BH)")
    return lines or [f"drift: no dataset besides the reference {result.reference}"]


def slice_lines(result) -> list[str]:
    slices = result.slices
    lines = [f"failure slices: {len(slices)} kept of {result.n_candidates} candidates tested (BH over all classes)"]
    for row in slices[slices["rank"] == 1].sort_values("q_value").head(5).itertuples():   # the strongest five
        scope = "all classes" if row.class_id == AVERAGE_TARGET else f"class {row.class_id}"
        lines.append(f"  {scope}: {row.description} (n = {row.n}, Dice drop {_num(row.effect)}, q = {_num(row.q_value)}"
                     f"{'' if row.uses_labels else ', expected Dice'})")
    return lines


def quality_lines(report: dict) -> list[str]:
    if "skipped" in report:
        return [f"expected Dice: skipped ({report['skipped']}, {report['n_fit']} found)"]
    lines = [f"expected Dice: fitted on {report['n_fit']} labelled reference cases; features "
             f"{', '.join(report['features'])}"]
    for scope, metrics in report["metrics"].items():
        if metrics:
            lines.append(f"  {scope}: Spearman(estimated, true mean Dice) = {_num(metrics['spearman_case_mean'])}, "
                         f"80 % intervals cover {_num(100 * metrics['coverage_class'])} % of class Dice, MAE "
                         f"{_num(metrics['mae'])} (constant {_num(metrics['mae_constant'])})")
    return lines


def summary_lines(result: dict) -> list[str]:
    lines = paper_lines(result) if "parity" in result else []
    if "reasons" in result:
        reasons = result["reasons"]
        lines.append(f"outlier reasons: {len(reasons)} cell contributions for {reasons.case_id.nunique()} cases")
    if "quality" in result:
        lines += quality_lines(result["quality"])
    if "bootstrap" in result:
        table = result["bootstrap"]
        n_boot = int(table.n_boot.iloc[0]) if len(table) else 0
        lines.append(f"bootstrap intervals: {len(table)} cells and context masses ({n_boot} resamples over patients)")
    if "agreement" in result:
        pooled = result["agreement"]
        for row in pooled[pooled.target_id == AVERAGE_TARGET].itertuples():
            lines.append(f"agreement with {row.other_run_id}: mean Spearman of the class rows "
                         f"{_num(row.spearman_mean)} [{_num(row.spearman_low)}, {_num(row.spearman_high)}] "
                         f"over {row.n_cases} cases")
    if "drift" in result:
        lines += drift_lines(result["drift"])
    if "slices" in result:
        lines += slice_lines(result["slices"])
    return lines
