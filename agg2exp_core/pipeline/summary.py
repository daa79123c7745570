"""What a ``precompute`` run did: computed, skipped, failed, held-back cases and notes (one line for the CLI)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PrecomputeSummary:
    run_id: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)  # done before, but from other input files
    crashed: list[str] = field(default_factory=list)     # held back: a process died computing them (or timed out)
    timed_out: list[str] = field(default_factory=list)   # of those, the ones past the case time limit
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        mean = f", {np.mean(self.seconds):.1f} s/case" if self.seconds else ""
        changed = f", {len(self.recomputed)} recomputed (inputs changed)" if self.recomputed else ""
        why = "died or ran out of time" if self.timed_out else "died"
        crashed = (f", {len(self.crashed)} held back (a previous run {why} computing them; --retry-crashed)"
                   if self.crashed else "")
        return (f"run {self.run_id}: {len(self.done)} computed, {len(self.skipped)} already done, "
                f"{len(self.failed)} failed{changed}{crashed}{mean}")
