"""Executors: map a case computation over jobs and yield each outcome as it completes.

The stages split a case in two: *compute* (a pure function ``compute(model, job) ->
result`` that needs the model: load, predict, explain, aggregate) and *write* (the
driver's: one store transaction per case). An executor runs the compute side:

- ``InProcessExecutor``: in the driver's own process, in order (the default; exactly
  the behaviour and speed of a plain loop).
- ``ProcessExecutor``: on worker processes of this machine (the standard library's
  process pool), each loading the model once per map and serving many cases; no
  start-up cost beyond the processes' imports (a few seconds), for one machine's cores.
- ``RayExecutor`` (``pipeline/ray_executor.py``): on Ray workers, local or a cluster,
  each worker loading the model once and serving many cases; Ray is imported only there.

Compute functions catch a case's own errors and return them in the result; an
executor adds only what a compute function cannot report itself: that the process
running it died (``Completed.crashed``), or that the case ran past ``timeout_s``
(``Completed.timed_out``: a hanging read, a stale network mount). A case past its time is
ended (in process: by SIGALRM, which interrupts a blocked read; worker processes and Ray
actors: the worker is killed and replaced) and the others go on.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from tqdm.auto import tqdm

from agg2exp_core.errors import InputError
from agg2exp_core.io.limits import DEFAULT_CASE_TIMEOUT_S  # noqa: F401 - the executors' default, re-exported
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
    timed_out: str = ""  # the job ran past the time limit and was ended

    def failure(self, error_stage: str) -> tuple[str, str] | None:
        """``(failures.stage, message)`` of a job that brought no result back (None: it did)."""
        from agg2exp_core.store.attempts import CRASHED_STAGE, TIMEOUT_STAGE

        if self.crashed:
            return CRASHED_STAGE, self.crashed
        if self.timed_out:
            return TIMEOUT_STAGE, self.timed_out
        return (error_stage, self.error) if self.error else None


def check_timeout(seconds: float | None) -> float | None:
    """A case time limit in seconds (None or 0: none); anything else is an ``InputError``."""
    if seconds is None or seconds == 0:
        return None
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise InputError("--case-timeout", f"expected a positive number of seconds (0: no limit), got {seconds!r}")
    return float(seconds)


class CaseTimeout(BaseException):
    """Raised in the computing thread when a case runs past its time (a BaseException, so that a
    compute function's ``except Exception`` does not record it as the case's own failure)."""


def timeout_message(seconds: float) -> str:
    return (f"ended after {seconds:g} s (the case time limit, --case-timeout): a read that hangs "
            "(a FIFO, a stale network mount) or a case too slow for the limit")


@contextmanager
def time_limit(seconds: float | None):
    """Raise ``CaseTimeout`` in this thread after ``seconds`` (SIGALRM: the main thread only).

    The signal interrupts a blocked system call (``open`` of a FIFO, a read), and Python raises
    in the handler; C code that never returns to Python is ended only by a worker executor.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise CaseTimeout(timeout_message(seconds))

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


Compute = Callable[[Segmenter, Any], Any]


class Executor(Protocol):
    name: str
    isolates_cases: bool  # jobs run outside the driver's process (a job cannot kill the driver)
    running: int          # jobs started and not yet yielded

    def __enter__(self) -> Executor: ...  # acquire workers (start or join a cluster)

    def __exit__(self, *exc) -> None: ...  # release them

    def map(self, compute: Compute, source: ModelSource, jobs: Iterable,
            on_start: Callable[[Any], None] | None = None,
            timeout_s: float | None = None) -> Iterator[Completed]: ...  # timeout_s: per job


class SharedSession:
    """Workers held from the first ``with`` block to the end of the last: nested blocks (the demo's
    steps inside its build) share one pool or cluster connection. Subclasses say how to
    ``_open`` and ``_close`` it."""

    _sessions = 0

    def __enter__(self):
        if self._sessions == 0:
            self._open()
        self._sessions += 1
        return self

    def __exit__(self, *exc) -> None:
        self._sessions -= 1
        if self._sessions == 0:
            self._close()

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


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
            on_start: Callable[[Any], None] | None = None,
            timeout_s: float | None = None) -> Iterator[Completed]:
        model = source.load()
        for job in jobs:
            if on_start is not None:
                on_start(job)
            self.running = 1
            try:
                with time_limit(timeout_s):
                    outcome = Completed(job, compute(model, job))
            except CaseTimeout as ended:
                outcome = Completed(job, timed_out=str(ended))
            self.running = 0
            yield outcome


class ProcessExecutor(SharedSession):
    """Computes jobs on ``workers`` processes of this machine, ``threads`` torch threads each.

    Processes are spawned (never forked from a driver holding torch's thread pools) when the
    outermost ``with`` block is entered, importing torch and ``preload`` (the modules of the
    compute functions) while the driver prepares its work, and stay until that block ends,
    so several runs of one build pay their start-up once; each process loads a map's model
    on its first job of that map. A process whose driver died ends itself. As with any
    spawned process, a script that uses it needs an ``if __name__ == "__main__":`` guard.
    A process that dies takes the pool with it: its cases in flight are run again one at a
    time, so the case that kills a process is found, and comes back as ``crashed`` after
    ``max_retries`` further attempts, while the others complete.
    """

    name = "processes"
    isolates_cases = True

    def __init__(self, workers: int | None = None, threads: int = 1, max_retries: int = 1,
                 preload: tuple[str, ...] = ()):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers or max(1, (os.cpu_count() or 1) // max(1, threads))
        self.threads, self.max_retries, self.preload = max(1, threads), max_retries, tuple(preload)
        self.running = 0
        self._pool: ProcessPoolExecutor | None = None
        self._warming: list = []  # the new pool's no-op jobs: done once its processes have started
        self._maps = itertools.count()

    def _open(self) -> None:
        self._pool = self._new_pool()

    def _close(self) -> None:
        if self._pool is not None:
            self._stop(self._pool)
            self._pool = None

    def map(self, compute: Compute, source: ModelSource, jobs: Iterable,
            on_start: Callable[[Any], None] | None = None,
            timeout_s: float | None = None) -> Iterator[Completed]:
        jobs = list(jobs)
        if not jobs:
            return
        with self:
            key = next(self._maps)
            queue, suspects, pending, attempts = deque(jobs), deque(), {}, {}
            self._started: dict = {}
            try:
                while queue or suspects or pending:
                    self._fill(compute, source, key, queue, suspects, pending, on_start)
                    finished, _ = wait(list(pending), timeout=1.0, return_when=FIRST_COMPLETED)  # wakes for signals
                    outcomes = self._end_overdue(pending, finished, queue, timeout_s)
                    broken = []
                    for future in finished:
                        job = pending.pop(future)
                        try:
                            outcomes.append(Completed(job, future.result()))
                        except BrokenProcessPool:
                            broken.append(job)
                        except Exception as err:  # noqa: BLE001 - the compute function raised (a bug, not the case)
                            outcomes.append(Completed(job, error=f"{type(err).__name__}: {err}"))
                    if broken:
                        outcomes += self._after_break(broken + list(pending.values()), suspects, attempts)
                        pending.clear()
                    self._fill(compute, source, key, queue, suspects, pending, on_start)  # before the driver writes
                    yield from outcomes
            finally:
                self.running = 0
                for future in pending:
                    future.cancel()

    def _fill(self, compute, source, key, queue, suspects, pending, on_start) -> None:
        """Keep every process busy; a suspect of a crash runs alone, so a crash is its own."""
        if self._warming:  # the time limit counts from a started process, not from its imports
            wait(self._warming)
            self._warming = []
        while (suspects and not pending) or (queue and not suspects and len(pending) < self.workers):
            job = (suspects or queue).popleft()
            if on_start is not None:
                on_start(job)
            future = self._pool.submit(_run_in_worker, compute, source, key, job)
            pending[future], self._started[future] = job, time.monotonic()
        self.running = len(pending)

    def _end_overdue(self, pending: dict, finished: set, queue: deque, timeout_s: float | None) -> list[Completed]:
        """Jobs past ``timeout_s`` come back as ``timed_out``; their processes are ended with the pool
        (one cannot end a single worker of it), and the other jobs in flight run again first."""
        now = time.monotonic()
        overdue = [f for f in pending if f not in finished and timeout_s and now - self._started[f] > timeout_s]
        if not overdue:
            return []
        outcomes = [Completed(pending.pop(f), timed_out=timeout_message(timeout_s)) for f in overdue]
        queue.extendleft(reversed([job for f, job in pending.items() if f not in finished]))
        for future in [f for f in pending if f not in finished]:
            del pending[future]
        self._stop(self._pool)
        self._pool = self._new_pool()
        return outcomes

    def _after_break(self, in_flight: list, suspects: deque, attempts: dict) -> list[Completed]:
        """A process died: restart the pool; cases in flight are suspects, crashed once tried alone too often."""
        self._stop(self._pool)
        self._pool = self._new_pool()
        crashed = []
        for job in in_flight:
            alone = len(in_flight) == 1
            attempts[id(job)] = attempts.get(id(job), 0) + alone
            if alone and attempts[id(job)] > self.max_retries:
                crashed.append(Completed(job, crashed=f"the worker process died while computing this case "
                                                      f"({attempts[id(job)]} attempts alone)"))
            else:
                suspects.append(job)
        return crashed

    def _new_pool(self) -> ProcessPoolExecutor:
        """A pool whose processes start now (one no-op each: a pool spawns a process per job submitted)."""
        import multiprocessing

        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self.threads, os.getpid(), self.preload))
        self._warming = [pool.submit(os.getpid) for _ in range(self.workers)]
        return pool

    @staticmethod
    def _stop(pool: ProcessPoolExecutor) -> None:
        """Cancel what has not started and end the processes now (an interrupt must not wait for a case)."""
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)


_WORKER_MODEL: dict = {}  # in a worker process: the model of the current map, by map key


def _start_worker(threads: int, driver: int, preload: tuple[str, ...]) -> None:
    threading.Thread(target=_exit_with, args=(driver,), daemon=True, name="exit-with-driver").start()
    import importlib

    import torch

    torch.set_num_threads(threads)
    for module in preload:
        importlib.import_module(module)


def _exit_with(driver: int) -> None:
    """A worker whose driver died (SIGKILL, out of memory) would wait for work forever: end it."""
    while os.getppid() == driver:
        time.sleep(1.0)
    os._exit(1)


def _run_in_worker(compute: Compute, source: ModelSource, key: int, job: Any) -> Any:
    if key not in _WORKER_MODEL:
        _WORKER_MODEL.clear()
        _WORKER_MODEL[key] = source.load(source.device)
    return compute(_WORKER_MODEL[key], job)


class CaseProgress:
    """The driver's progress line: cases done / failed / running, and tqdm's ETA.

    ``report(n, remaining_s)``, if given, hears of every case (cases finished, seconds left
    by the bar's rate or ``None`` before there is one): e.g. to record a build step's progress.
    """

    def __init__(self, total: int, desc: str, enabled: bool, executor: Executor,
                 report: Callable[[int, float | None], None] | None = None, unit: str = "case"):
        self.executor, self.done, self.failed, self.report = executor, 0, 0, report
        self.total, self.started = total, time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr)

    def update(self, ok: bool) -> None:
        self.done += ok
        self.failed += not ok
        self.bar.set_postfix(done=self.done, failed=self.failed, running=self.executor.running, refresh=False)
        self.bar.update(1)
        if self.report is not None:
            self.report(self.done + self.failed, self.remaining_s())

    def remaining_s(self) -> float | None:
        """Seconds left at the mean rate so far (what the bar shows as its ETA)."""
        n = self.done + self.failed
        return (self.total - n) * (time.monotonic() - self.started) / n if n else None

    def note(self, line: str) -> None:
        if not self.bar.disable:
            tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
