"""Widgets for large label sets: the heat map's group zoom, and a class picker grouped for search.

Shown only above ``label_groups.LARGE_LABEL_SET`` classes, so a 17-class thorax model looks as before.
Streamlit's selectbox filters its options as one types; labelled ``group · class``, typing a
group's name ("bone") lists its classes, typing part of a class name ("rib") finds it.
"""
from __future__ import annotations

from typing import Sequence

from dashboard import label_groups
from dashboard.analytics import Roi
from dashboard.widgets import state


def is_large(rois: Sequence[Roi]) -> bool:
    return len(rois) > label_groups.LARGE_LABEL_SET


def zoom_picker(targets: Sequence[Roi], key: str = "zoom", container=None) -> str:
    """'all' for a small label set; else the user's choice of groups / one group / every class (URL-synced)."""
    if not is_large(targets):
        return label_groups.ALL
    return state.selectbox(f"Classes ({len(targets)})", label_groups.zoom_options(targets), key,
                           default=label_groups.GROUPS, container=container, what="class group",
                           format_func=label_groups.zoom_label,
                           help="Type to search. Groups: each source group summed, each target group averaged.")


def roi_picker(label: str, rois: Sequence[Roi], key: str, default: Roi | None = None, container=None) -> Roi:
    """A selectbox of RoIs synced with the URL by RoI name; grouped and searchable for large label sets."""
    large = is_large(rois)
    ordered = label_groups.picker_order(rois) if large else list(rois)
    by_name = {r.name: r for r in ordered}
    names = list(by_name)
    shown = (lambda name: f"{by_name[name].grp} · {name}") if large else str
    name = state.selectbox(label, names, key, default=(default.name if default else names[0]),
                           container=container, what="class", format_func=shown,
                           help="Type part of a class or group name to search." if large else None)
    return by_name[name]
