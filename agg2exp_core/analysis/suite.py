"""The analyses of a run after its outliers, under one writer: reasons, expected Dice, intervals,
method agreement, drift, failure slices (each in its own transaction; the store is published once at the end).

``analyze_run`` is the ``analyze`` command: the outlier analysis (the default settings or the
paper's, ``paper=True``) and then the extensions that are switched on. ``extend`` runs only
the extensions on a run that has been analysed (the demo calls it after ``outliers.analyze``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agg2exp_core import store
from agg2exp_core.analysis import agreement, drift, outliers, paper, quality, reasons, slice_store, uncertainty
from agg2exp_core.analysis.slices import SliceConfig
from agg2exp_core.vocabulary import COMPARISON_KIND


@dataclass(frozen=True)
class SuiteConfig:
    drift: drift.DriftConfig | None = None                # None: no drift analysis
    quality: quality.QualityConfig | None = field(default_factory=quality.QualityConfig)
    reasons: reasons.ReasonsConfig | None = field(default_factory=reasons.ReasonsConfig)
    bootstrap: uncertainty.BootstrapConfig | None = field(default_factory=uncertainty.BootstrapConfig)
    agreement: bool = True
    paper: bool = False                                   # the outlier analysis with the paper's settings
    external: str | None = None                           # dataset of the paper's sex/age tests
    kind: str = COMPARISON_KIND                           # mass kind of the method agreement
    slices: SliceConfig | None = None                     # None: no failure-slice search (after expected Dice)


def extensions(con, run_id: str, suite: SuiteConfig) -> dict:
    """The switched-on extensions of an analysed run; returns what each found."""
    report: dict = {}
    if suite.reasons is not None:
        report["reasons"] = reasons.outlier_reasons(con, run_id, suite.reasons)
    if suite.quality is not None:
        report["quality"] = quality.analyze_quality(con, run_id, suite.quality)
    if suite.bootstrap is not None:
        report["bootstrap"] = uncertainty.analyze_uncertainty(con, run_id, suite.bootstrap)
    if suite.agreement:
        report["agreement"] = agreement.analyze_agreement(con, run_id, kind=suite.kind)
    if suite.drift is not None:
        report["drift"] = drift.drift_analysis(con, run_id, suite.drift)
    if suite.slices is not None:
        report["slices"] = slice_store.analyze_slices(con, run_id, suite.slices)
    return report


def analyze_run(db: str | Path, run_id: str | None, config: outliers.AnalysisConfig, suite: SuiteConfig) -> dict:
    """Outliers (default or paper settings) and the extensions of one run, under one writer."""
    with store.open_writer(outliers.existing_store(db)) as con:
        run_id = outliers.resolve_run(con, db, run_id)
        if suite.paper:
            result = paper.paper_analysis(con, run_id, config.fit_dataset, config.fit_split, suite.external,
                                          config.random_state)
        else:
            result = outliers.compute(con, run_id, config)
            outliers.write(con, result, config)
        result.update(extensions(con, run_id, suite))
    return result


def extend(db: str | Path, run_id: str, suite: SuiteConfig) -> dict:
    """Only the extensions, on a run whose outliers were analysed."""
    with store.open_writer(outliers.existing_store(db)) as con:
        return extensions(con, outliers.resolve_run(con, db, run_id), suite)
