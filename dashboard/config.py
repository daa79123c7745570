"""Which store(s) the dashboard shows: ``--db`` after ``--``, else ``$AGG2EXP_DB``, else the demo store."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

DEFAULT_DB = Path("data/demo.duckdb")
ENV_VAR = "AGG2EXP_DB"
ROOTS_ENV_VAR = "AGG2EXP_ARTIFACT_ROOTS"


def store_paths(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Store files offered by this server, first one shown by default.

    ``streamlit run app.py -- --db a.duckdb [--db b.duckdb]`` puts ``--db`` in the
    script's argv; unknown arguments (e.g. pytest's, under AppTest) are ignored.
    ``$AGG2EXP_DB`` may list several paths separated by ``os.pathsep``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db", action="append", default=[])
    known, _ = parser.parse_known_args(argv)
    paths = [p for p in known.db if p]
    if not paths and environ.get(ENV_VAR):
        paths = [p for p in environ[ENV_VAR].split(os.pathsep) if p]
    if not paths:
        paths = [str(DEFAULT_DB)]
    unique: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path not in unique:
            unique.append(path)
    return unique


def store_label(path: Path, all_paths: Sequence[Path]) -> str:
    """Short name of a store for the sidebar and the URL: its file stem (made unique)."""
    stems = [p.stem for p in all_paths]
    return path.stem if stems.count(path.stem) == 1 else f"{path.stem}-{list(all_paths).index(path)}"


def artifact_roots(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Folders outside a store's own from which its slice artefacts may be shown (``--data-dir`` of
    the multi-node layout, docs/DEPLOYMENT.md): ``--artifact-root DIR`` after ``--`` (repeatable),
    else ``$AGG2EXP_ARTIFACT_ROOTS`` (``os.pathsep``-separated). None by default: a store alone
    cannot make the dashboard read files outside its folder."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--artifact-root", action="append", default=[])
    known, _ = parser.parse_known_args(argv)
    roots = [p for p in known.artifact_root if p] or [p for p in environ.get(ROOTS_ENV_VAR, "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in roots]
