"""One exception type for bad user input, so entry points can print one line and exit non-zero."""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: a file or parameter and what is wrong with it.

    ``str(err)`` is a single line: ``"<source>: <problem>"``.
    """

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(f"{self.source}: {self.problem}")
