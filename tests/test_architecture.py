"""The layout's promises (docs/ARCHITECTURE.md): rooms import downward only, no circles,
SQL only in the store, modules readable in one sitting, light imports for the dashboard."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "agg2exp_core"
# Top to bottom: a module may import only from its own room or the rooms above it.
ROOMS = ["errors", "vocabulary", "labels", "io", "models", "attribution", "aggregate", "store", "analysis",
         "pipeline", "cli"]
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in CORE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Core modules a file imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agg2exp_core"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            found |= subs or ({node.module} & set(modules))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names} & set(modules)
    return found


def _room(module: str) -> int:
    parts = module.split(".")
    return ROOMS.index(parts[1]) if len(parts) > 1 and parts[1] in ROOMS else -1


def test_rooms_import_downward_only():
    modules = _modules()
    upward = [(m, d) for m, p in modules.items() for d in _imports(p, modules)
              if _room(m) >= 0 and _room(d) > _room(m)]
    assert not upward, f"imports against the data flow: {upward}"


def test_no_import_circles():
    modules = _modules()
    # a package's __init__ re-exporting its children is not a dependency of the children
    graph = {m: {d for d in _imports(p, modules) if not (p.name == "__init__.py" and d.startswith(m + "."))}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail(f"import circle: {' -> '.join(path[path.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


# What running or writing SQL looks like in Python source: DuckDB's calls and SQL's own words.
SQL_SIGNS = re.compile(r"\.(execute|executemany|sql|query_df|from_query)\(|\bBEGIN TRANSACTION\b|duckdb\.connect\(|"
                       r"\b(SELECT|INSERT INTO|DELETE FROM|CREATE (TABLE|MACRO|VIEW)|ATTACH|WHERE|IS (NOT )?NULL)\s|"
                       r"\b(regexp_matches|unnest|coalesce)\(")
STORE = CORE / "store"


def _application_files() -> list[Path]:
    """Every Python module of the project: the core, the dashboard, the app and its pages."""
    return sorted([*CORE.rglob("*.py"), *(REPO / "dashboard").rglob("*.py"), REPO / "app.py",
                   *(REPO / "app_pages").rglob("*.py")])


def test_sql_is_written_only_in_the_store():
    """Every read and write of the store is SQL under agg2exp_core/store/ (queries/ reads, writer writes)."""
    offenders = {str(p.relative_to(REPO)): match.group(0) for p in _application_files()
                 if STORE not in p.parents and (match := SQL_SIGNS.search(p.read_text()))}
    assert not offenders, f"SQL outside agg2exp_core/store/: {offenders}"


def test_the_sql_sign_catches_what_it_should():
    caught = ['con.execute("x")', "cursor.sql(text)", "SELECT a FROM b", "duckdb.connect(path)",
              "INSERT INTO t VALUES (1)", "ATTACH ? AS store", "BEGIN TRANSACTION",
              "c.sex IS NULL OR regexp_matches(c.sex, '^$')", "WHERE c.age >= ?"]
    passed = ["frame.query('a > 1')", "st.selectbox('Select a run')", "selected = 1", "# select the cases"]
    assert all(SQL_SIGNS.search(text) for text in caught) and not any(SQL_SIGNS.search(text) for text in passed)


def test_modules_are_short():
    long = {str(p.relative_to(REPO)): n for p in CORE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long


def test_core_import_and_the_vocabulary_stay_free_of_torch():
    code = ("import sys, agg2exp_core, agg2exp_core.vocabulary, agg2exp_core.labels, agg2exp_core.cli, "
            "agg2exp_core.analysis.ordering; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_public_contract_paths():
    import agg2exp_core
    from agg2exp_core import explain, roi_importance
    from agg2exp_core.aggregate import roi_importance as old_roi_importance
    from agg2exp_core.attribution import explain as old_explain

    assert explain is old_explain and roi_importance is old_roi_importance
    assert set(agg2exp_core.__all__) == {"explain", "roi_importance"}


def test_console_script_is_the_module_entry_point():
    import importlib
    import tomllib

    script = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["agg2exp"]
    module, func = script.split(":")
    main = getattr(importlib.import_module(module), func)
    from agg2exp_core.cli import main as module_main

    assert main is module_main
    out = subprocess.run([sys.executable, "-m", "agg2exp_core", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "precompute" in out.stdout and "usage: agg2exp" in out.stdout


# --- the dashboard's house -------------------------------------------------------------------------
DASHBOARD = REPO / "dashboard"
PAGES = REPO / "app_pages"
# Rooms that compute or draw without Streamlit (the pages and the report lay out what they return).
STREAMLIT_FREE = ["dashboard/views", "dashboard/figures", "dashboard/imaging", "dashboard/context.py",
                  "dashboard/matrices.py", "dashboard/analytics.py", "dashboard/label_groups.py"]
# What a page may import: Streamlit, the frame (ui), views, widgets, the report's downloads, the vocabulary's
# constants, and the standard library's partial application. Computation lives in the views.
PAGE_IMPORTS = ("streamlit", "functools", "dashboard.ui", "dashboard.views", "dashboard.widgets",
                "dashboard.report", "agg2exp_core.vocabulary")
# Modules other branches are splitting: the limit applies once they land; the test fails when one
# of them is short already, so this list cannot go stale.
LONG_FOR_NOW: set[str] = set()


def _python_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in ([root] if root.suffix == ".py" else root.rglob("*.py")))


def _imported_names(path: Path) -> set[str]:
    """Every module name a file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _is_under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_views_figures_imaging_and_context_import_no_streamlit():
    offenders = {str(p.relative_to(REPO)): sorted(n for n in _imported_names(p) if _is_under(n, ["streamlit"]))
                 for p in _python_files(*(REPO / s for s in STREAMLIT_FREE))}
    assert not {k: v for k, v in offenders.items() if v}


def test_figures_context_and_imaging_load_without_streamlit():
    code = ("import sys, dashboard.figures, dashboard.context, dashboard.matrices, dashboard.imaging.slices, "
            "dashboard.imaging.surfaces; print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _page_imports(path: Path) -> set[str]:
    """The modules a page imports (``from dashboard import ui`` gives ``dashboard.ui``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {f"{node.module}.{a.name}" for a in node.names} if node.module == "dashboard" else {node.module}
    return names


def test_pages_are_layout_only():
    """A page imports widgets, the frame and views only: no pandas, numpy, SQL, store reads or figure building."""
    offenders = {page.name: bad for page in _python_files(PAGES)
                 if (bad := sorted(n for n in _page_imports(page) if not _is_under(n, PAGE_IMPORTS)))}
    assert not offenders, f"pages that compute (move it into dashboard/views): {offenders}"


def test_dashboard_modules_are_short():
    lengths = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
               for p in _python_files(DASHBOARD, PAGES, REPO / "app.py")}
    long = {name for name, n in lengths.items() if n > MAX_LINES}
    assert long <= LONG_FOR_NOW, f"modules over {MAX_LINES} lines: {sorted(long - LONG_FOR_NOW)}"
    assert not LONG_FOR_NOW - long, f"short now, take them off LONG_FOR_NOW: {sorted(LONG_FOR_NOW - long)}"


def test_no_import_circles_in_the_dashboard():
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in _python_files(DASHBOARD)}
    graph = {m: {n for n in _imported_names(p) if n in files and n != m
                 and not (p.name == "__init__.py" and n.startswith(m + "."))} for m, p in files.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in path:
                pytest.fail(f"import circle: {' -> '.join(path[path.index(nxt):] + [nxt])}")
            if nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for module in graph:
        visit(module, [module])
