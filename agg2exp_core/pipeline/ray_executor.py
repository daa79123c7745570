"""Cases on Ray: a pool of worker actors, each loading the model once and serving many cases.

The driver (the process that writes the store) keeps one case in flight per worker and
yields each outcome as it completes; it stays the only writer. A worker process that
dies mid-case (killed, out of memory) is restarted by Ray and the case is run again, up
to ``max_retries`` times; after that the case comes back as ``crashed`` and the driver
records it once, so a case that kills every worker is never retried forever. Results
depend on the case alone, so a retried case gives the rows of an uninterrupted run.

Without an address the executor starts a local Ray instance bound to the loopback
interface and stops it at the end; with ``auto`` or ``HOST:PORT`` it joins a running
cluster (started by ``ray start`` / ``ray up`` / KubeRay) and ships this package's code
to it. Ray is imported here only, and only when a run uses it.

A case past the time limit (``timeout_s``) comes back as ``timed_out``: its actor is killed
(without restart, so Ray does not run the case again) and a fresh one takes its place.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from agg2exp_core.errors import InputError
from agg2exp_core.models import Segmenter
from agg2exp_core.pipeline.executors import Completed, Compute, ModelSource, SharedSession, timeout_message

LOOPBACK = "127.0.0.1"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # agg2exp_core/


@dataclass(frozen=True)
class RayConfig:
    """Where and how cases run on Ray."""

    address: str | None = None        # None: a local loopback instance for this run; "auto" or "HOST:PORT"
    cpus_per_case: float = 1.0        # CPU cores reserved by each worker (also its torch threads)
    gpus_per_case: float = 0.0        # GPUs reserved by each worker (fractions share a GPU)
    workers: int | None = None        # worker processes (default: as many as the cluster's resources hold)
    max_retries: int = 2              # re-runs of a case whose worker process died
    local_cpus: int | None = None     # CPUs of a local instance (default: workers x cpus_per_case, or all)
    object_store_mb: int | None = None  # object store of a local instance (default: Ray's)
    ship_code: bool = True            # joining a cluster: upload agg2exp_core with the job (runtime_env)

    def __post_init__(self) -> None:
        if not self.cpus_per_case > 0:
            raise InputError("--cpus-per-case", f"must be > 0, got {self.cpus_per_case}")
        if self.gpus_per_case < 0:
            raise InputError("--gpus-per-case", f"must be >= 0, got {self.gpus_per_case}")
        if self.workers is not None and self.workers < 1:
            raise InputError("--ray-workers", f"must be >= 1, got {self.workers}")
        if self.max_retries < 0:
            raise InputError("--ray-retries", f"must be >= 0, got {self.max_retries}")
        if self.address is not None and not str(self.address).strip():
            raise InputError("--ray-address", "empty (use auto, HOST:PORT, or leave it out for a local instance)")


class CaseWorker:
    """A Ray actor's body: loads the model on its first case and keeps it for the next ones."""

    def __init__(self, source: ModelSource, threads: int):
        self.source, self.threads, self.model = source, threads, None

    def ready(self) -> bool:
        """Load the model now: a case's time limit then counts from a worker ready to compute it."""
        if self.model is None:
            import torch

            torch.set_num_threads(self.threads)
            self.model = self.source.load(self.source.device)
        return True

    def run(self, compute: Compute, job: Any) -> Any:
        self.ready()
        return compute(self.model, job)


class RayExecutor(SharedSession):
    name = "ray"
    isolates_cases = True

    def __init__(self, config: RayConfig = RayConfig()):
        self.config = config
        self.running = 0
        self.workers = 0
        self._joined = False  # this executor started or joined Ray (and leaves it at the end)

    def _open(self) -> None:
        """Start or join Ray at the first ``with`` (before the store is opened: a bad address writes nothing)."""
        self._joined = self._connect()

    def _close(self) -> None:
        if self._joined:
            stop_local()  # also ends a joined cluster's session (ray.shutdown) and restores RAY_AUTH_MODE
            self._joined = False

    def map(self, compute: Compute, source: ModelSource, jobs: Iterable,
            on_start: Callable[[Any], None] | None = None,
            timeout_s: float | None = None) -> Iterator[Completed]:
        jobs = list(jobs)
        if not jobs:
            return
        import ray

        with self:
            actors: list = []
            try:
                actors, new_actor = self._start_workers(ray, source, len(jobs))
                yield from self._serve(ray, actors, new_actor, compute, jobs, on_start, timeout_s)
            finally:
                self.running = 0
                for actor in actors:
                    try:
                        ray.kill(actor, no_restart=True)
                    except Exception:  # noqa: BLE001 - the session may be gone already
                        pass

    def _connect(self) -> bool:
        """Start or join Ray; False when the caller already had a Ray session (left as it is)."""
        address = self.config.address
        if address is not None:
            check_reachable(address)
        import ray

        if ray.is_initialized():
            return False
        if address is not None:
            _LOCAL.update(folder=None, saved={k: os.environ.get(k) for k in AUTH_VARIABLES})
            require_token()
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address is None:
                self._start_local(ray, quiet)
            else:
                env = {"py_modules": [str(PACKAGE_DIR)]} if self.config.ship_code else None
                ray.init(address=address, runtime_env=env, **quiet)
        except (ConnectionError, ray.exceptions.AuthenticationError) as err:
            stop_local()
            raise InputError("--ray-address", f"cannot join the Ray cluster at {address!r} "
                                              f"({str(err).strip().splitlines()[0]})") from None
        except BaseException:
            stop_local()
            raise
        return True

    def _start_local(self, ray, options: dict) -> None:
        cfg = self.config
        cpus = cfg.local_cpus or (int(-(-cfg.workers * cfg.cpus_per_case // 1)) if cfg.workers else os.cpu_count())
        if cfg.cpus_per_case > cpus:
            raise InputError("--cpus-per-case", f"{cfg.cpus_per_case} exceeds the {cpus} CPUs of the local instance")
        init_local(cpus, cfg.object_store_mb, **options)
        gpus = ray.cluster_resources().get("GPU", 0)
        if cfg.gpus_per_case > gpus:
            stop_local()
            raise InputError("--gpus-per-case", f"{cfg.gpus_per_case} GPU(s) per case, but Ray sees {gpus:g} "
                                                "on this machine")

    def _start_workers(self, ray, source: ModelSource, n_jobs: int) -> list:
        cfg = self.config
        if cfg.workers:
            n = cfg.workers
        else:
            total = ray.cluster_resources()
            n = total.get("GPU", 0) / cfg.gpus_per_case if cfg.gpus_per_case else total.get("CPU", 1) / cfg.cpus_per_case
        self.workers = max(1, min(int(n), n_jobs))
        if isinstance(source.model, Segmenter):  # one copy in the object store, not one per worker
            source = ray.put(source)
        actor = ray.remote(CaseWorker).options(num_cpus=cfg.cpus_per_case, num_gpus=cfg.gpus_per_case,
                                                max_restarts=-1, max_task_retries=cfg.max_retries)
        threads = max(1, int(cfg.cpus_per_case))

        def new_actor():
            return actor.remote(source, threads)

        return [new_actor() for _ in range(self.workers)], new_actor

    def _serve(self, ray, actors: list, new_actor: Callable[[], Any], compute: Compute, jobs: list,
               on_start: Callable[[Any], None] | None, timeout_s: float | None = None) -> Iterator[Completed]:
        """One case in flight per worker; a worker gets its next case before the driver writes its last.
        A case past ``timeout_s`` ends with its actor (``actors`` holds the live ones, for the caller to kill)."""
        queue, idle, pending = deque(jobs), deque(), {}
        warming = [(actor, actor.ready.remote()) for actor in actors]  # a job's clock starts on a ready worker

        def fill() -> None:
            if warming:
                done, _ = ray.wait([ref for _, ref in warming], num_returns=len(warming), timeout=0)
                idle.extend(actor for actor, ref in warming if ref in done)
                warming[:] = [(actor, ref) for actor, ref in warming if ref not in done]
            while queue and idle:
                actor, job = idle.popleft(), queue.popleft()
                if on_start is not None:
                    on_start(job)
                pending[actor.run.remote(compute, job)] = (job, actor, time.monotonic())
            self.running = len(pending)

        fill()
        while pending or queue:
            waiting = list(pending) + [ref for _, ref in warming]
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)  # wakes up for signals
            ready = [ref for ref in ready if ref in pending]
            outcomes = []
            for ref in ready:
                job, actor, _ = pending.pop(ref)
                idle.append(actor)
                outcomes.append(self._outcome(ray, ref, job))
            now = time.monotonic()
            for ref in [r for r, (_, _, t) in pending.items() if timeout_s and now - t > timeout_s]:
                job, actor, _ = pending.pop(ref)
                ray.kill(actor, no_restart=True)  # a restarted actor would run the case again
                actors.remove(actor)
                actors.append(new_actor())
                warming.append((actors[-1], actors[-1].ready.remote()))
                outcomes.append(Completed(job, timed_out=timeout_message(timeout_s)))
            fill()
            yield from outcomes

    def _outcome(self, ray, ref, job) -> Completed:
        try:
            return Completed(job, ray.get(ref))
        except ray.exceptions.RayTaskError as err:  # the compute function raised (a bug, not the case)
            return Completed(job, error=_first_line(err.cause if err.cause is not None else err))
        except ray.exceptions.RayError as err:  # the worker process died, on every attempt
            return Completed(job, crashed=f"the worker process died while computing this case "
                                          f"({self.config.max_retries + 1} attempts; {_first_line(err)})")


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A ``HOST:PORT`` that accepts no connection is one line now, not Ray retrying forever."""
    if address == "auto" or "://" in address:  # found by Ray itself / a Ray Client address
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--ray-address", f"expected auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise InputError("--ray-address", f"cannot reach a Ray cluster at {address} "
                                          f"({err.strerror or type(err).__name__})") from None


AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_LOCAL: dict = {}  # what init_local changed (private folder, environment), undone by stop_local


def init_local(num_cpus: int, object_store_mb: int | None = None, **options) -> Path:
    """Start a Ray instance of this process only, every port on loopback, token-authenticated,
    its session files in a private folder (0700); returns that folder. Stop it with ``stop_local``.

    Ray 2.60 binds every interface and advertises the machine's routable address unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` was set when it was imported; a process that
    imported Ray before gets the same effect from the constant that variable sets. Left to
    itself, Ray also honours an inherited ``RAY_AUTH_MODE=disabled`` (anyone on the machine
    may then submit jobs that run as this user), writes its token to ``~/.ray/auth_token``
    readable by every local user (umask 022) and its sockets and logs under a world-writable
    ``/tmp/ray``: here the token is fresh, in a 0600 file of the private folder.
    """
    import ray
    from ray._private import ray_constants

    folder = Path(tempfile.mkdtemp(prefix="a2e-ray-"))  # mode 0700, a new name (O_EXCL)
    token_file = folder / "auth_token"
    descriptor = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH", *AUTH_VARIABLES)}
    _LOCAL.update(folder=folder, saved=saved)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's own processes read it too
    # workers import this very checkout, whatever is installed in the environment
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), saved["PYTHONPATH"]) if p)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    _reload_authentication()
    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, num_cpus=num_cpus,
                 object_store_memory=object_store_mb * 1024 ** 2 if object_store_mb else None,
                 _temp_dir=str(folder / "ray"), **options)  # Ray makes its own folder 0777: the parent guards it
    except BaseException:
        stop_local()
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
        _restore({k: saved[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH")})
    return folder


def stop_local() -> None:
    """Stop Ray, then remove init_local's private folder (token, sockets, logs) and restore the environment."""
    import ray

    ray.shutdown()
    if _LOCAL:
        _restore({k: v for k, v in _LOCAL["saved"].items() if k in AUTH_VARIABLES})
        _reload_authentication()
        if _LOCAL["folder"] is not None:
            shutil.rmtree(_LOCAL["folder"], ignore_errors=True)
        _LOCAL.clear()


def require_token() -> None:
    """Joining a cluster (``--ray-address``) authenticates with a token, or does not join.

    Ray sends a token to an explicit address only under ``RAY_AUTH_MODE=token``; a cluster
    started without it runs any local or network user's jobs (docs/DEPLOYMENT.md).
    """
    mode = os.environ.get("RAY_AUTH_MODE", "token").strip().lower()
    if mode != "token":
        raise InputError("--ray-address", f"RAY_AUTH_MODE={mode}: joining a Ray cluster needs token "
                                          "authentication (RAY_AUTH_MODE=token on the cluster and here)")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if not os.environ.get("RAY_AUTH_TOKEN") and not Path(path).is_file():
        raise InputError("--ray-address", "no Ray authentication token: give the cluster's token as "
                                          "RAY_AUTH_TOKEN_PATH=FILE (or RAY_AUTH_TOKEN, or ~/.ray/auth_token)")
    os.environ["RAY_AUTH_MODE"] = "token"
    _reload_authentication()


def _reload_authentication() -> None:
    """Ray caches the authentication mode and token per process: read them again from the environment."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _restore(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
