"""Executors: map a case computation over jobs and yield each outcome as it completes.

The stages split a case in two: *compute* (a pure function ``compute(model, job) ->
result`` that needs the model: load, predict, explain, aggregate) and *write* (the
driver's: one store transaction per case). An executor runs the compute side:

- ``InProcessExecutor``: in the driver's own process, in order (the default; exactly
  the behaviour and speed of a plain loop).
- ``RayExecutor`` (``pipeline/ray_executor.py``): on Ray workers, local or a cluster,
  each worker loading the model once and serving many cases; Ray is imported only there.

Compute functions catch a case's own errors and return them in the result; an
executor adds only what a compute function cannot report itself: that the process
running it died (``Completed.crashed``).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from tqdm.auto import tqdm

from agg2exp_core.models import Segmenter, resolve_device
from agg2exp_core.models.sources import ModelSpec, load_model

@dataclass(frozen=True)
class ModelSource:
    """What a worker needs to load the model itself: a model path or ``ModelSpec``, or a loaded ``Segmenter``."""

    model: str | Path | ModelSpec | Segmenter
    device: str = "auto"

    def load(self, device: str | None = None) -> Segmenter:
        """The model on ``device`` (default: the source's own device setting)."""
        if isinstance(self.model, Segmenter):
            return self.model if device is None else on_device(self.model, device)
        return load_model(self.model, device=device or self.device)


def on_device(model: Segmenter, device: str) -> Segmenter:
    target = resolve_device(device)
    if target == model.device:
        return model
    return dataclasses.replace(model, network=model.network.to(target), device=target)


@dataclass
class Completed:
    """One job's outcome: the compute function's result, or why no result came back."""

    job: Any
    result: Any = None
    crashed: str = ""   # the process computing the job died (after the executor's retries)
    error: str = ""     # the compute function raised instead of returning its failure


Compute = Callable[[Segmenter, Any], Any]


class Executor(Protocol):
    name: str
    isolates_cases: bool  # jobs run outside the driver's process (a job cannot kill the driver)
    running: int          # jobs started and not yet yielded

    def __enter__(self) -> Executor: ...  # acquire workers (start or join a cluster)

    def __exit__(self, *exc) -> None: ...  # release them

    def map(self, compute: Compute, source: ModelSource, jobs: Iterable,
            on_start: Callable[[Any], None] | None = None) -> Iterator[Completed]: ...


class InProcessExecutor:
    """Computes each job in the calling process, one after the other, with the driver's model."""

    name = "inprocess"
    isolates_cases = False

    def __init__(self) -> None:
        self.running = 0

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, compute: Compute, source: ModelSource, jobs: Iterable,
            on_start: Callable[[Any], None] | None = None) -> Iterator[Completed]:
        model = source.load()
        for job in jobs:
            if on_start is not None:
                on_start(job)
            self.running = 1
            result = compute(model, job)
            self.running = 0
            yield Completed(job, result)


class CaseProgress:
    """The driver's progress line: cases done / failed / running, and tqdm's ETA."""

    def __init__(self, total: int, desc: str, enabled: bool, executor: Executor):
        self.executor, self.done, self.failed = executor, 0, 0
        self.bar = tqdm(total=total, desc=desc, unit="case", disable=not enabled, file=sys.stderr)

    def update(self, ok: bool) -> None:
        self.done += ok
        self.failed += not ok
        self.bar.set_postfix(done=self.done, failed=self.failed, running=self.executor.running, refresh=False)
        self.bar.update(1)

    def note(self, line: str) -> None:
        if not self.bar.disable:
            tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
