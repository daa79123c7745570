"""View state in the URL: page widgets start from valid query parameters and write theirs back.

A copied URL reproduces the view: the sidebar filter and each page's choices live in
``st.query_params``. Widgets own their value while the user stays on a page; when a page
is entered (first load, navigation, ``st.switch_page`` with query parameters) its widgets
are seeded from the URL. Values that are not valid options are ignored with a warning,
which shows them as literal text (``dashboard.text.literal``), never as Markdown.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st

from dashboard.text import literal_list, parameter

_PAGE = "_state_current_page"
_ENTERING = "_state_entering"


def enter_page(name: str) -> None:
    """Record the page of this run; the page's widgets re-read the URL when it changed."""
    st.session_state[_ENTERING] = st.session_state.get(_PAGE) != name
    st.session_state[_PAGE] = name


def entering() -> bool:
    return bool(st.session_state.get(_ENTERING, True))


def url_values(key: str) -> list[str]:
    return list(st.query_params.get_all(key))


def url_value(key: str) -> str | None:
    values = url_values(key)
    return values[0] if values else None


def set_url(key: str, value: str | Sequence[str] | None) -> None:
    """Write one query parameter (None or [] removes it); untouched when already equal."""
    values = [] if value is None else ([value] if isinstance(value, str) else [str(v) for v in value])
    if url_values(key) == values:
        return
    if values:
        st.query_params[key] = values if len(values) > 1 else values[0]
    elif key in st.query_params:
        del st.query_params[key]


def seed(key: str, options: Sequence[Any], default: Any, to_text: Callable[[Any], str] = str,
         what: str = "value") -> None:
    """Put a valid value into the widget state before the widget is drawn.

    On entering the page the URL wins (when valid); otherwise the widget keeps its state.
    An invalid URL value is dropped with a visible warning.
    """
    by_text = {to_text(o): o for o in options}
    if entering() or key not in st.session_state:
        raw = url_value(key)
        if raw is not None and raw in by_text:
            st.session_state[key] = by_text[raw]
        else:
            if raw is not None:
                st.warning(f"Ignored URL parameter {parameter(key, raw)}: not a known {what} "
                           f"(known: {literal_list(by_text)}).")
            if key not in st.session_state or entering():
                st.session_state[key] = default
    if st.session_state.get(key) not in list(options):
        st.session_state[key] = default


def seed_number(key: str, lo: float, hi: float, default: float, what: str = "number",
                integer: bool = False) -> None:
    """Like ``seed`` for a number in [lo, hi]."""
    if entering() or key not in st.session_state:
        raw = url_value(key)
        value = default
        if raw is not None:
            try:
                parsed = float(raw)
                if not lo <= parsed <= hi or parsed != parsed:
                    raise ValueError
                value = int(parsed) if integer else parsed
            except ValueError:
                st.warning(f"Ignored URL parameter {parameter(key, raw)}: not a {what} between {lo:g} and {hi:g}.")
        st.session_state[key] = value
    current = st.session_state.get(key)
    if not isinstance(current, (int, float)) or not lo <= current <= hi:
        st.session_state[key] = default


def publish(key: str, value: Any, default: Any, to_text: Callable[[Any], str] = str) -> None:
    """Write a widget's value to the URL (removed when it equals the default)."""
    set_url(key, None if value == default else to_text(value))


def selectbox(label: str, options: Sequence[Any], key: str, default: Any = None, container=None,
              format_func: Callable[[Any], str] = str, to_text: Callable[[Any], str] = str,
              what: str = "value", **kwargs) -> Any:
    """A selectbox whose value is seeded from and written to the URL parameter ``key``."""
    options = list(options)
    default = options[0] if default is None and options else default
    seed(key, options, default, to_text, what)
    value = (container or st).selectbox(label, options, key=key, format_func=format_func, **kwargs)
    publish(key, value, default, to_text)
    return value


def radio(label: str, options: Sequence[Any], key: str, default: Any = None, container=None,
          format_func: Callable[[Any], str] = str, what: str = "value", **kwargs) -> Any:
    """A horizontal radio synced with the URL parameter ``key``."""
    options = list(options)
    default = options[0] if default is None else default
    seed(key, options, default, str, what)
    value = (container or st).radio(label, options, key=key, format_func=format_func, horizontal=True, **kwargs)
    publish(key, value, default)
    return value


def toggle(label: str, key: str, default: bool = False, container=None, **kwargs) -> bool:
    """A toggle synced with the URL parameter ``key`` ('1'/'0')."""
    seed(key, [True, False], default, lambda v: "1" if v else "0", "switch value (0 or 1)")
    value = (container or st).toggle(label, key=key, **kwargs)
    publish(key, value, default, lambda v: "1" if v else "0")
    return value


def slider(label: str, key: str, lo: float, hi: float, default: float, step: float, container=None,
           integer: bool = False, what: str = "number", **kwargs) -> float:
    """A slider synced with the URL parameter ``key``."""
    seed_number(key, lo, hi, default, what, integer)
    if integer:
        st.session_state[key] = int(st.session_state[key])
        value = (container or st).slider(label, int(lo), int(hi), step=int(step), key=key, **kwargs)
    else:
        st.session_state[key] = float(st.session_state[key])
        value = (container or st).slider(label, float(lo), float(hi), step=float(step), key=key, **kwargs)
    publish(key, value, default, lambda v: f"{v:g}")
    return value
