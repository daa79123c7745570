"""Downloads: figures as PNG/SVG/PDF (Plotly + kaleido + Chromium) and tables as CSV.

Static images are produced only when a download button is clicked (deferred download
data), through kaleido's persistent browser server under a lock, and cached per figure.
Without Chromium the page says so and offers the interactive HTML instead.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import threading
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
DEFAULT_SIZE = (1200, 700)
_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_lock = threading.Lock()
_server = {"started": False}


class ExportUnavailable(RuntimeError):
    """Static export cannot run here (no Chromium); the message says what to install."""


def chromium_path() -> str | None:
    """The Chrome/Chromium kaleido will use, or None."""
    for variable in ("BROWSER_PATH", "KALEIDO_CHROME_PATH"):
        candidate = os.environ.get(variable)
        if candidate and Path(candidate).exists():
            return candidate
    for name in _CHROME_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def slug(text: str) -> str:
    """File-name-safe lower-case form of a text."""
    cleaned = re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_.")
    return cleaned.lower() or "x"


def export_filename(parts: Sequence[str], extension: str) -> str:
    """'agg2exp_<part>_<part>….<ext>' (at most 160 characters before the extension)."""
    stem = "_".join(["agg2exp"] + [slug(p) for p in parts if p])
    return f"{stem[:160]}.{extension.lstrip('.')}"


def figure_to_bytes(figure: go.Figure, fmt: str, width: int | None = None, height: int | None = None,
                    scale: float | None = None) -> bytes:
    """Static image of a figure (png, svg or pdf)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _cached_export(figure.to_json(), fmt, width, height, scale)


@functools.lru_cache(maxsize=48)
def _cached_export(figure_json: str, fmt: str, width: int | None, height: int | None,
                   scale: float | None) -> bytes:
    if chromium_path() is None:
        raise ExportUnavailable("static export needs Chromium (apt-get install chromium)")
    figure = pio.from_json(figure_json)
    width = width or figure.layout.width or DEFAULT_SIZE[0]
    height = height or figure.layout.height or DEFAULT_SIZE[1]
    scale = scale or (2 if fmt == "png" else 1)
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _start_server()
        return pio.to_image(figure, format=fmt, width=int(width), height=int(height), scale=scale)


def _start_server() -> None:
    """kaleido's persistent browser (one start for many exports); per-call browsers otherwise."""
    if _server["started"]:
        return
    try:
        import kaleido
        kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # noqa: BLE001 - per-call export still works without the server
        pass
    _server["started"] = True


# --- Streamlit widgets -------------------------------------------------------------------------

PLOTLY_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def show_figure(figure: go.Figure, name_parts: Sequence[str], key: str, container=None,
                compact: bool = False) -> None:
    """Draw a figure with download buttons for PNG, SVG and PDF (made only when clicked).

    ``compact`` puts the buttons in a "Download" pop-over (for figures in narrow columns).
    """
    where = container or st
    config = dict(PLOTLY_CONFIG, toImageButtonOptions={"filename": export_filename(name_parts, "png")[:-4]})
    where.plotly_chart(figure, key=f"chart-{key}", config=config, width="stretch")
    if compact:
        figure_downloads(figure, name_parts, key, where.popover("Download", icon=":material/download:"), stacked=True)
    else:
        figure_downloads(figure, name_parts, key, where)


def figure_downloads(figure: go.Figure, name_parts: Sequence[str], key: str, container=None,
                     stacked: bool = False) -> None:
    where = container or st
    columns = [where] * 5 if stacked else where.columns([1, 1, 1, 1, 6], gap="small")
    if chromium_path() is None:
        columns[4].caption("PNG/SVG/PDF export needs Chromium on the server (`apt-get install chromium`); "
                           "the interactive HTML below works without it.")
        columns[0].download_button("HTML", data=lambda: figure.to_html(include_plotlyjs=True).encode(),
                                   file_name=export_filename(name_parts, "html"), mime="text/html",
                                   on_click="ignore", key=f"dl-{key}-html", icon=":material/download:")
        return
    for column, fmt in zip(columns, FORMATS):
        column.download_button(fmt.upper(), data=functools.partial(figure_to_bytes, figure, fmt),
                               file_name=export_filename(name_parts, fmt), mime=FORMATS[fmt], on_click="ignore",
                               key=f"dl-{key}-{fmt}", icon=":material/download:",
                               help=f"Download this figure as {fmt.upper()}")


def table_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def table_download(frame: pd.DataFrame, name_parts: Sequence[str], key: str, container=None,
                   label: str = "CSV") -> None:
    """Download button for a table as CSV (made only when clicked)."""
    (container or st).download_button(label, data=functools.partial(table_csv, frame),
                                      file_name=export_filename(name_parts, "csv"), mime="text/csv",
                                      on_click="ignore", key=f"dl-{key}-csv", icon=":material/table:",
                                      help="Download this table as CSV")


def show_table(frame: pd.DataFrame, name_parts: Sequence[str], key: str, container=None, **kwargs) -> None:
    """A dataframe with a CSV download button under it."""
    where = container or st
    where.dataframe(frame, key=f"table-{key}", hide_index=True, **kwargs)
    table_download(frame, name_parts, key, where)
