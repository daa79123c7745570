"""Agg2Exp Studio's compute core: explain a 3-D segmentation model over a cohort of CT volumes.

Rooms follow the data (see docs/ARCHITECTURE.md): ``io`` -> ``models`` -> ``attribution``
-> ``aggregate`` -> ``store`` -> ``analysis`` -> ``pipeline``; ``cli`` parses arguments.
``from agg2exp_core import explain, roi_importance`` is the public entry point (the
contract of docs/CONTRACTS.md). Both are imported on first use, so that ``import agg2exp_core``
(and the dashboard, which reads only the vocabulary and the store) stays free of torch.
"""
from __future__ import annotations

__all__ = ["explain", "roi_importance"]


def __getattr__(name: str):
    if name == "explain":
        from agg2exp_core.attribution import explain

        return explain
    if name == "roi_importance":
        from agg2exp_core.aggregate import roi_importance

        return roi_importance
    raise AttributeError(f"module 'agg2exp_core' has no attribute {name!r}")
