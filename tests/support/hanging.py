"""Compute functions that hang like a read from a FIFO or a stale network mount, for the
case time limit tests (this module holds no tests; worker processes import it by name)."""
from __future__ import annotations

import os


def open_fifo_forever(fifo: str) -> bytes:
    """Open a FIFO with no writer: ``open`` blocks in the kernel until a signal or a kill."""
    with open(fifo, "rb") as f:
        return f.read()


def hang_on(job: tuple[str, str]) -> None:
    name, fifo = job
    if name.startswith("hang"):
        open_fifo_forever(fifo)


def compute_or_hang(model, job: tuple[str, str]) -> str:
    """``job = (name, fifo)``: a job named 'hang…' blocks on the FIFO, the others return their name."""
    hang_on(job)
    return f"{job[0]} by {os.getpid()}"
