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
