"""Knowledge graph: for every target class, arrows from its k most important source RoIs."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from dashboard import compute, figures
from dashboard.context import ViewContext


@dataclass
class KnowledgeGraph:
    empty: str = ""
    figure: go.Figure | None = None
    edges: pd.DataFrame | None = None           # target, rank, source, mass


def knowledge_graph(ctx: ViewContext, k: int, min_mass: float = 0.0, background: bool = False) -> KnowledgeGraph:
    nodes, self_mass, edges, positions = compute.graph_edges(ctx.ref, ctx.run_id, ctx.cohort, int(k),
                                                             include_background=background, min_mass=float(min_mass))
    if edges.empty:
        return KnowledgeGraph("No importance outside the targets themselves for this cohort.")
    figure = figures.knowledge_graph(nodes, self_mass, edges, positions, f"Top-{k} sources per target class",
                                     ctx.provenance())
    names = {n.roi_id: n.name for n in nodes}
    table = edges.assign(source=edges.source_id.map(names), target=edges.target_id.map(names))[
        ["target", "rank", "source", "mass"]]
    return KnowledgeGraph("", figure, table)
