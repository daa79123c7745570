"""What every figure shares: the template, fonts, title with provenance subtitle, RoI labels,
group legend, number formats.

The template is applied by ``base_layout`` to each figure it finishes, not by setting
``plotly.io.templates.default`` at import: importing the figures changes no global state.
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from agg2exp_core.labels import GROUP_COLORS
from agg2exp_core.analysis.ordering import GROUP_ORDER
from dashboard.analytics import Roi

TEMPLATE = pio.templates["plotly_white"]
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=12)
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
LOG_FLOOR = 1e-4
LEGEND_TOP_RIGHT = dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right")


def apply_template(fig: go.Figure) -> go.Figure:
    """Put the dashboard's template on ``fig``.

    The registered template is valid already, so it is assigned without re-validation, the way
    Plotly applies its own default template: validating it costs ≈ 15 ms a figure (5-8 a page).
    """
    layout = fig.layout
    layout._validate = False
    try:
        layout.template = TEMPLATE
    finally:
        layout._validate = fig._validate
    return fig


def base_layout(fig: go.Figure, title: str, provenance: str, height: int | None = None) -> go.Figure:
    """Template, font, title and the provenance subtitle (an exported image still says what it shows)."""
    apply_template(fig)
    fig.update_layout(
        title=dict(text=html.escape(title), x=0.0, xanchor="left",
                   subtitle=dict(text=html.escape(provenance), font=dict(size=10, color="#666"))),
        font=FONT, margin=dict(l=10, r=10, t=70, b=10))
    if height:
        fig.update_layout(height=height)
    return fig


def roi_label(item, tick: bool = True) -> str:
    """An axis tick of a RoI (its name in its group colour) or of a plain name; ``tick=False``: the bare name."""
    if not tick:
        return item.name if isinstance(item, Roi) else str(item)
    if isinstance(item, Roi):
        return f"<span style='color:{item.color}'>{html.escape(item.name)}</span>"
    return html.escape(str(item))


def group_legend(fig: go.Figure, groups: Sequence[str], row=None, col=None) -> None:
    """Invisible marker traces that put the anatomical-group colours into the legend."""
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    for grp in sorted(dict.fromkeys(groups), key=lambda g: rank.get(g, len(rank))):
        trace = go.Scatter(x=[None], y=[None], mode="markers", name=grp, showlegend=True,
                           marker=dict(size=10, color=GROUP_COLORS.get(grp, "#999"), symbol="square"))
        fig.add_trace(trace, row=row, col=col) if row else fig.add_trace(trace)


def alpha(color: str, opacity: float) -> str:
    """``#rrggbb`` as ``rgba(r,g,b,opacity)`` (grey for anything else)."""
    color = color.lstrip("#")
    if len(color) != 6:
        return f"rgba(120,120,120,{opacity})"
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{opacity})"


def finite(value) -> float | None:
    """``value`` as a finite float; None when it is missing, NaN or not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def fmt(value, digits: int = 4) -> str:
    """'0.1234' (4 decimals), or ``digits`` < 4 significant digits; 'n/a' when missing."""
    value = finite(value)
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if digits < 4 else f"{value:.4f}"


def signed_text(value, signed: bool = True) -> str:
    """A signed effect as text: '+12.3', '−0.0451' (4 significant digits); 'n/a' when missing."""
    value = finite(value)
    if value is None:
        return "n/a"
    return (f"{value:+.4g}" if signed else f"{value:.4g}").replace("-", "−")


def signed_bound(values) -> float:
    """Half-width of a zero-centred colour scale: the largest |value| (1 when there is none)."""
    values = np.abs(np.asarray(values, dtype=float))
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size and values.max() > 0 else 1.0
