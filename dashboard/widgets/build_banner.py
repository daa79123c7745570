"""What is still being built: a banner over every page while the store's build runs.

A store built while it is read (the demo behind ``make run``) lists its steps in
``build_status``. While any step is not done, the banner says which are running (with
their progress) and which are pending, and a fragment looks for a new snapshot every
``REFRESH_S`` seconds: the banner follows each one, and the page is drawn again on the
new snapshot when a step has started or ended, else at most every ``PAGE_REFRESH_S``
seconds (a page redrawn every few seconds would be hard to read). Once every step is
done, neither banner nor timer remains. The text is built by pure functions (tested
without Streamlit).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.text import visible

REFRESH_S = 5.0
PAGE_REFRESH_S = 30.0
_DRAWN_AT = "_build_page_drawn_at"


def unfinished(steps: pd.DataFrame) -> bool:
    return bool(len(steps)) and not bool((steps.state == "done").all())


def incomplete_runs(steps: pd.DataFrame) -> set[str]:
    """Runs whose build step is not done yet (partly published)."""
    if not len(steps):
        return set()
    return {str(r) for r, s in zip(steps.run_id, steps.state) if isinstance(r, str) and s != "done"}


def step_text(step) -> str:
    """``SmoothGrad 12/36 cases, ≈ 2 min left`` for a running step with counts, else its title."""
    text = visible(step.title)
    if pd.notna(step.total) and pd.notna(step.done):
        text += f" {int(step.done)}/{int(step.total)}{f' {visible(step.unit)}' if isinstance(step.unit, str) else ''}"
    if pd.notna(step.remaining_s) and step.state == "running":
        text += f", ≈ {_duration(float(step.remaining_s))} left"
    return text


def _duration(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds / 60))} min" if seconds >= 60 else f"{max(1, round(seconds))} s"


def banner_text(steps: pd.DataFrame) -> tuple[str, bool]:
    """(the banner's text, whether the build stopped) of an unfinished build."""
    by_state = {state: [step_text(s) for s in steps[steps.state == state].itertuples()]
                for state in ("running", "pending", "failed")}
    parts = []
    if by_state["failed"]:
        parts.append(f"stopped at {', '.join(by_state['failed'])}")
    if by_state["running"]:
        parts.append(f"now {'; '.join(by_state['running'])}")
    if by_state["pending"]:
        parts.append(f"{', '.join(by_state['pending'])} pending")
    stopped = bool(by_state["failed"]) and not by_state["running"]
    head = "The store's build stopped" if stopped else "The store is still being built"
    tail = ("Run `make demo` (or the command that built it) to resume it." if stopped else
            "Pages show what is published so far and update as results arrive.")
    return f"**{head}:** {' · '.join(parts)}. {tail}", stopped


def _phase(steps: pd.DataFrame) -> tuple:
    """What changes when a step starts or ends (not with each case)."""
    return tuple(zip(steps.step, steps.state))


def _show(steps: pd.DataFrame) -> None:
    text, stopped = banner_text(steps)
    (st.warning if stopped else st.info)(text, icon=":material/construction:")


def banner(path: str | Path) -> pd.DataFrame:
    """Draw the banner (and its timer) while the store at ``path`` is being built; return its steps."""
    ref = data.store_ref(path)
    steps = data.build_status(ref) if ref is not None else pd.DataFrame(columns=["step", "state", "run_id"])
    if unfinished(steps):
        st.session_state[_DRAWN_AT] = time.time()
        _live(str(path), ref.signature, _phase(steps))
    return steps


@st.fragment(run_every=REFRESH_S)
def _live(path: str, shown: tuple, phase: tuple) -> None:
    """The banner on the latest snapshot; the whole page again when a step started or ended."""
    ref = data.store_ref(path)
    if ref is None:
        return
    steps = data.build_status(ref)
    if ref.signature != shown:
        stale = time.time() - st.session_state.get(_DRAWN_AT, 0.0) >= PAGE_REFRESH_S
        if _phase(steps) != phase or stale or not unfinished(steps):
            st.rerun()
    if unfinished(steps):
        _show(steps)


def _readable_steps(ref: data.StoreRef | None) -> pd.DataFrame:
    """The build's steps, or none for a missing or unreadable store (its page says why)."""
    try:
        return data.build_status(ref) if ref is not None else pd.DataFrame(columns=["step", "state"])
    except Exception:  # noqa: BLE001 - not a DuckDB store, or a half-copied one
        return pd.DataFrame(columns=["step", "state"])


def building(path: str | Path) -> bool:
    """Whether the store at ``path`` is one whose build has not finished."""
    return unfinished(_readable_steps(data.store_ref(path)))


def wait_for_store(path: str | Path) -> None:
    """On the page shown while there is no store (or no run) yet: reload when one is published."""
    ref = data.store_ref(path)
    _await(str(path), ref.signature if ref is not None else None)


@st.fragment(run_every=REFRESH_S)
def _await(path: str, shown: tuple | None) -> None:
    ref = data.store_ref(path)
    if (ref.signature if ref is not None else None) != shown:
        st.rerun()
    steps = _readable_steps(ref)
    if unfinished(steps):
        _show(steps)
    st.caption(f"This page looks for new results every {REFRESH_S:g} s.")
