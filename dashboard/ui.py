"""Shared page scaffolding: the sidebar (store, run, cohort filter), page header, empty states.

``app.py`` calls ``sidebar_context()`` once per run; pages get the result from
``context()``. The filter lives in the widgets' state while the user works and in
``st.query_params`` so that a copied URL reproduces the view; URL values are validated
against the run's options (``filters.parse_filter_params``) before anything uses them.
Values from the URL or the store appear in Markdown only through ``text.literal``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from agg2exp_core.errors import InputError
from agg2exp_core.vocabulary import MASS_KIND_TITLES
from dashboard import analytics, config, data, filters
from dashboard.widgets import build_banner, class_groups, field_filter, state
from dashboard.imaging import slices
from dashboard.text import literal, parameter
from dashboard.analytics import Roi
from dashboard.context import ViewContext
from dashboard.views.common import filter_options
from dashboard.views.heat_map import ORDERS

_CONTEXT = "_dashboard_context"
_FILTER_RUN = "_filter_initialised_for"
_SHADOW = "_filter_shadow"
_PENDING = "_pending_url_warnings"
_URL_WARNINGS = "_url_warnings"      # shown until the user changes the filter
RUN_KEY, STORE_KEY = "run", "store"
W_STORE, W_RUN = "w_store", "w_run"
W_DATASET, W_SPLIT, W_SEX, W_AGE, W_PATHOLOGY = "w_dataset", "w_split", "w_sex", "w_age", "w_pathology"
PATHOLOGY_TEXT = {"": "all cases", filters.PATHOLOGY_ANY: "with any pathology",
                  filters.PATHOLOGY_NONE: "without pathology"}


@dataclass
class StoreProblem:
    """Why no store can be shown (missing file, unreadable, no runs)."""

    path: Path
    title: str
    detail: str


Context = ViewContext      # the pages' name for it


def app_frame() -> Context | None:
    """Sidebar and store checks shared by every page; None (after an explanatory page) without a store."""
    state.enter_page(_page_key())
    st.sidebar.markdown("**Agg2Exp Studio** · cohort explanations")
    shown = sidebar_context()
    if isinstance(shown, StoreProblem):
        store_problem_page(shown)
        return None
    build_banner.banner(shown.ref.path)  # while the store is being built: what is still to come
    return shown


def context() -> Context:
    """The context app.py built for this run (its frame ran first: login gate, sidebar, store checks)."""
    ctx = st.session_state.get(_CONTEXT)
    if ctx is None:     # only a script run outside app.py gets here
        st.error("This page runs inside the dashboard: start it with `streamlit run app.py`.")
        st.stop()
    return ctx


def _page_key() -> str:
    run = get_script_run_ctx()
    return getattr(run, "page_script_hash", "") or "main"


# --- sidebar --------------------------------------------------------------------------------------

def sidebar_context() -> Context | StoreProblem:
    """Draw the sidebar (store, run, cohort filter) and return what the pages show."""
    paths = config.store_paths()
    path = _choose_store(paths)
    problem = _store_problem(path)
    if problem is not None:
        return problem
    ref = data.store_ref(path)
    runs = data.runs(ref)
    # Evaluation-only runs hold no importance matrices; they appear on the Methods page.
    # Computed runs come before imported ones, so the default is the store's own newest run,
    # and complete runs before runs still being computed (a store published while it is built).
    order = 2 * (runs.source != "precompute") + runs.run_id.isin(build_banner.incomplete_runs(data.build_status(ref)))
    with_matrices = runs.assign(_order=order)[runs.n_cases > 0].sort_values("_order", kind="stable").drop(
        columns="_order")
    run = _choose_run(with_matrices if len(with_matrices) else runs)
    run_cases = data.run_cases(ref, str(run["run_id"]))
    options = filter_options(ref, str(run["run_id"]), run_cases)
    warnings = _seed_filter(str(run["run_id"]), options)
    cohort = _filter_widgets(options)
    url = filters.filter_to_params(cohort)
    for key in dict.fromkeys([*_filter_url_keys(), *url]):
        state.set_url(key, url.get(key))
    cases = data.cohort_cases(ref, str(run["run_id"]), cohort)
    if warnings or st.session_state.get(_PENDING):
        st.session_state[_URL_WARNINGS] = st.session_state.pop(_PENDING, []) + warnings
    ctx = Context(ref=ref, store_label=config.store_label(path, paths), run=run, runs=runs,
                  rois=analytics.roi_table(data.rois(ref)), options=options, cohort=cohort, cases=cases,
                  n_run_cases=len(run_cases), warnings=list(st.session_state.get(_URL_WARNINGS, [])))
    st.session_state[_CONTEXT] = ctx
    st.sidebar.caption(f"{len(cases)} of {len(run_cases)} cases of this run match.")
    return ctx


def _choose_store(paths: list[Path]) -> Path:
    if len(paths) == 1:
        return paths[0]
    labels = [config.store_label(p, paths) for p in paths]
    with st.sidebar:
        label = state.selectbox("Store", labels, STORE_KEY, what="store")
    return paths[labels.index(label)]


def _store_problem(path: Path) -> StoreProblem | None:
    ref = data.store_ref(path)
    if ref is None:
        return StoreProblem(path, "No store found",
                            f"There is no DuckDB store at {literal(path, 400)} yet. `make run` builds the demo store in "
                            "the background (this page opens the dashboard once its first results are published), "
                            "`make demo` in the foreground. Or start "
                            "the dashboard on your own store: `streamlit run app.py -- --db path/to/store.duckdb` "
                            f"(or set `{config.ENV_VAR}`).")
    try:
        tables = data.table_names(ref)
    except InputError as err:   # defines SQL objects of its own (agg2exp_core.store.lockdown)
        return StoreProblem(path, "The store was refused",
                            f"{literal(path, 400)}: {literal(err.problem, 300)}. Nothing of it was read. Rebuild the "
                            "store with `python -m agg2exp_core precompute`, or ask whoever sent it for a clean copy.")
    except duckdb.Error as err:
        return StoreProblem(path, "The store cannot be read",
                            f"{literal(path, 400)} is not a readable DuckDB store ({type(err).__name__}: {literal(err, 300)}).")
    missing = sorted(data.REQUIRED_TABLES - tables)
    if missing:
        return StoreProblem(path, "Not an Agg2Exp store",
                            f"{literal(path, 400)} lacks the table(s) {', '.join(missing)} (written by another tool or an "
                            "older version?). Build a store with `python -m agg2exp_core precompute` or "
                            "`make demo`.")
    if data.runs(ref).empty:
        return StoreProblem(path, "The store has no runs yet",
                            f"{literal(path, 400)} holds no explanation run. Run `python -m agg2exp_core precompute --help` "
                            "to compute one, or `make demo` for the demo.")
    return None


def _run_label(runs: pd.DataFrame):
    info = {r.run_id: f"{r.method} · {r.run_id} · {r.n_cases} cases" for r in runs.itertuples()}
    return lambda run_id: info.get(run_id, run_id)


def _choose_run(runs: pd.DataFrame) -> pd.Series:
    run_ids = runs.run_id.tolist()
    shadow = _shadow()
    first = _FILTER_RUN not in st.session_state
    if first or W_RUN not in shadow:
        raw = state.url_value(RUN_KEY)
        if raw is not None and raw not in run_ids:
            st.session_state.setdefault(_PENDING, []).append(
                f"Ignored URL parameter {parameter(RUN_KEY, raw)}: no such run in this store; showing "
                f"{literal(run_ids[0])}.")
        shadow[W_RUN] = raw if raw in run_ids else run_ids[0]
    if shadow.get(W_RUN) not in run_ids:
        shadow[W_RUN] = run_ids[0]
    with st.sidebar:
        run_id = st.selectbox("Run", run_ids, **_mirror(W_RUN), format_func=_run_label(runs),
                              help="An explanation run: one attribution method on one model and cohort.")
    state.set_url(RUN_KEY, None if run_id == run_ids[0] else run_id)
    return runs.set_index("run_id", drop=False).loc[run_id]


def _seed_filter(run_id: str, options: filters.FilterOptions) -> list[str]:
    """Seed the filter widgets: from the URL on the session's first run, re-validated when the run changes."""
    warnings: list[str] = []
    previous = st.session_state.get(_FILTER_RUN)
    if previous is None:
        params = {key: state.url_values(key) for key in _filter_url_keys()}
        cohort, warnings = filters.parse_filter_params(params, options)
        _set_widgets(cohort, options)
    elif previous != run_id:
        _revalidate_widgets(options)
    st.session_state[_FILTER_RUN] = run_id
    return warnings


def _filter_url_keys() -> list[str]:
    """The filter's URL keys: the fixed ones and the metadata fields' (``field.<name>``)."""
    return [*filters.FILTER_KEYS, *filters.url_field_keys(list(st.query_params))]


def _set_widgets(cohort: filters.CohortFilter, options: filters.FilterOptions) -> None:
    shadow = _shadow()
    field_filter.seed(shadow, cohort.fields, options)
    shadow[W_DATASET] = list(options.datasets if cohort.datasets is None else cohort.datasets)
    shadow[W_SPLIT] = list(options.splits if cohort.splits is None else cohort.splits)
    shadow[W_SEX] = list(options.sexes if cohort.sexes is None else cohort.sexes)
    if options.age_range is not None:
        lo, hi = options.age_range
        shadow[W_AGE] = (int(max(lo, min(hi, cohort.age_min if cohort.age_min is not None else lo))),
                         int(min(hi, max(lo, cohort.age_max if cohort.age_max is not None else hi))))
    shadow[W_PATHOLOGY] = cohort.pathology


def _revalidate_widgets(options: filters.FilterOptions) -> None:
    """After a run change: keep the choices that still exist, reset the others."""
    shadow = _shadow()
    for key, available in ((W_DATASET, options.datasets), (W_SPLIT, options.splits), (W_SEX, options.sexes)):
        kept = [v for v in shadow.get(key, []) if v in available]
        shadow[key] = kept or list(available)
    if options.age_range is not None:
        lo, hi = options.age_range
        a, b = shadow.get(W_AGE, (lo, hi))
        a, b = max(lo, min(a, hi)), min(hi, max(b, lo))
        shadow[W_AGE] = (int(a), int(b)) if a <= b else (lo, hi)
    if shadow.get(W_PATHOLOGY, "") not in options.pathology_choices:
        shadow[W_PATHOLOGY] = ""
    field_filter.revalidate(shadow, options)


def _reset_filter(options: filters.FilterOptions) -> None:
    _set_widgets(filters.CohortFilter(), options)
    st.session_state.pop(_URL_WARNINGS, None)


def _filter_widgets(options: filters.FilterOptions) -> filters.CohortFilter:
    """Draw the cohort filter and return it (normalised: no restriction where all is selected)."""
    sidebar = st.sidebar
    shadow = _shadow()
    sidebar.subheader("Cohort filter")
    datasets = _multiselect(sidebar, "Dataset", options.datasets, W_DATASET)
    splits = _multiselect(sidebar, "Split", options.splits, W_SPLIT)
    if options.sex_recorded:
        sexes = _multiselect(sidebar, "Sex", options.sexes, W_SEX)
    else:
        sexes = None
        sidebar.caption("Sex is not recorded for this cohort.")
    age_min = age_max = None
    if options.age_recorded:
        lo, hi = options.age_range
        if W_AGE not in shadow:
            shadow[W_AGE] = (lo, hi)
        a, b = sidebar.slider("Age range", lo, hi, **_mirror(W_AGE), help="Cases with unknown age are left out "
                              "while the range is narrowed.")
        age_min = None if a <= lo else float(a)
        age_max = None if b >= hi else float(b)
        if options.n_unknown_age and (age_min is not None or age_max is not None):
            sidebar.caption(f"{options.n_unknown_age} case(s) with unknown age are left out.")
    else:
        sidebar.caption("Age is not recorded for this cohort.")
    if options.pathologies:
        if shadow.get(W_PATHOLOGY, "") not in options.pathology_choices:
            shadow[W_PATHOLOGY] = ""
        pathology = sidebar.selectbox("Pathology present", options.pathology_choices, **_mirror(W_PATHOLOGY),
                                      format_func=lambda p: PATHOLOGY_TEXT.get(p, f"with {p}"))
    else:
        pathology = ""
        sidebar.caption("No pathology annotations in this cohort.")
    fields = field_filter.draw(sidebar, options, shadow, _mirror)
    sidebar.button("Reset filter", on_click=_reset_filter, args=(options,), icon=":material/restart_alt:")
    cohort = filters.CohortFilter(datasets=datasets, splits=splits, sexes=sexes, age_min=age_min,
                                  age_max=age_max, pathology=pathology, fields=fields)
    return filters.normalise(cohort, options)


def _multiselect(sidebar, label: str, available: tuple[str, ...], key: str) -> tuple[str, ...] | None:
    shadow = _shadow()
    if key not in shadow:
        shadow[key] = list(available)
    shadow[key] = [v for v in shadow[key] if v in available]
    chosen = sidebar.multiselect(label, list(available), **_mirror(key), placeholder="none selected")
    return tuple(chosen)


def _shadow() -> dict:
    """The filter's own copy of the sidebar widgets' values.

    Widget ids depend on the script that draws them, which changes once when Streamlit first
    runs an app with a ``pages/`` folder (and on every AppTest run); a widget whose id changed
    would fall back to its default. The shadow restores the value before every draw.
    """
    return st.session_state.setdefault(_SHADOW, {})


def _mirror(key: str) -> dict:
    """Widget arguments that draw ``key`` from the shadow and write user changes back to it."""
    st.session_state[key] = _shadow()[key]
    return {"key": key, "on_change": _remember, "args": (key,)}


def _remember(key: str) -> None:
    _shadow()[key] = st.session_state[key]
    st.session_state.pop(_URL_WARNINGS, None)


# --- page scaffolding ---------------------------------------------------------------------------

def page_header(title: str, ctx: Context, needs_cases: bool = True, intro: str = "") -> None:
    """Title, what is shown (store · run · cohort · n), URL warnings, and the empty-cohort state."""
    st.title(title)
    if intro:
        st.caption(intro)
    st.caption(f"Store {literal(ctx.store_label)} · run {literal(ctx.run_id)} ({literal(ctx.method)}) · cohort: "
               f"{filters.describe_filter(ctx.cohort, quote=literal)} · **{len(ctx.cases)}** of {ctx.n_run_cases} cases")
    for message in ctx.warnings:
        st.warning(message, icon=":material/link_off:")
    if needs_cases and ctx.cases.empty:
        st.info("No case matches the cohort filter. Widen the filter in the sidebar, or press **Reset filter**.",
                icon=":material/filter_alt_off:")
        st.stop()


def store_problem_page(problem: StoreProblem) -> None:
    """The page shown instead of the dashboard when no store can be read; it reloads once one is published."""
    st.title("Agg2Exp Studio")
    if build_banner.building(problem.path):  # a store published while it is built, before its first run
        build_banner.wait_for_store(problem.path)
        return
    st.error(f"**{problem.title}.** {problem.detail}", icon=":material/database:")
    st.markdown("To try the dashboard on the built-in demo cohort:\n\n"
                "```bash\nmake run    # builds data/demo.duckdb in the background and opens the dashboard at once\n```")
    build_banner.wait_for_store(problem.path)


def roi_picker(label: str, rois: list[Roi], key: str, default: Roi | None = None, container=None) -> Roi:
    """A selectbox of RoIs synced with the URL by RoI name (grouped and searchable for large label sets)."""
    return class_groups.roi_picker(label, rois, key, default=default, container=container)


def kind_picker(ctx: Context, key: str = "kind", container=None) -> str:
    """abs / pos / neg mass and the volume-adjusted lift, each offered only when the run has it."""
    kinds = (["abs", "pos", "neg"] if ctx.has_signed_masses else ["abs"]) + (["lift"] if ctx.has_lift else [])
    kind = state.radio("Mass", kinds, key, container=container, format_func=MASS_KIND_TITLES.get,
                       what="mass kind")
    if not ctx.has_signed_masses:
        (container or st).caption("Positive/negative masses are not stored for this run (e.g. imported "
                                  "published aggregates hold absolute masses only).")
    if kind == "lift":
        (container or st).caption("Lift: mass per unit volume relative to uniform, e_b→a / (|R_b|/|V|). 1 = the "
                                  "region holds its volume's share of the evidence; a diffuse map is ~1 everywhere.")
    elif not ctx.has_lift:
        (container or st).caption("No region volumes for this run: the volume-adjusted mass (lift) is absent.")
    return kind


def order_picker(label: str = "Order", container=None) -> str:
    """The order of a heat map's rows and columns (URL key ``order``)."""
    return state.radio(label, list(ORDERS), "order", container=container, what="order", format_func=ORDERS.get)


def comparison_attributes(ctx: Context) -> list[str]:
    """The case attributes the cohort can be split by."""
    return analytics.comparison_attributes(ctx.cases)


def window_picker(label: str = "CT window", container=None) -> tuple[str, float, float]:
    """CT window preset (or custom width and level sliders): (name, width, level)."""
    preset = state.radio(label, [*slices.WINDOW_PRESETS, "custom"], "window", container=container,
                         format_func=slices.window_label, what="window preset")
    if preset == "custom":
        width = state.slider("Window width (HU)", "ww", 1.0, 4000.0, 400.0, 10.0, container=container)
        level = state.slider("Window level (HU)", "wl", -1200.0, 2000.0, 40.0, 10.0, container=container)
    else:
        width, level = slices.WINDOW_PRESETS[preset]
    return preset, float(width), float(level)


def percentile_picker(container=None) -> float:
    """The attribution threshold of the slices: |value| below this percentile hidden."""
    return float(state.slider("Hide attribution below this percentile of |value|", "pct", 0.0, 99.0, 80.0, 1.0,
                              container=container))


def source_from_url(ctx: Context) -> Roi | None:
    """The source RoI named by the ``source`` URL parameter (a link from the Outliers page), if known."""
    name = state.url_value("source")
    by_name = {r.name: r for r in ctx.rois.values()}
    if name is None:
        return None
    if name not in by_name:
        st.warning(f"Ignored URL parameter {parameter('source', name)}: no such RoI in this store.")
        return None
    return by_name[name]
