"""Failed sign-ins with the shared password, throttled for the whole process (pure; no Streamlit).

Three limits, each against a different way of guessing (docs/DEPLOYMENT.md, "Security model"):

- **per client** (an IPv4 address, an IPv6 /48, the site prefix one subscriber usually gets):
  after the k-th failure the client waits ``min(base_delay * 2**(k-1), max_delay)`` seconds,
  and one of its attempts is checked at a time. A client's record is kept while it is under
  penalty and for ``forget_s`` after its last failure; it is **never evicted** to make room:
  when ``max_clients`` records are held, a client without one is refused ("full") until a
  record expires. Evicting the oldest instead let an attacker rotating through 10,000
  addresses wipe its own penalties.
- **server-wide**: every failure spends one token of a budget of ``budget_failures`` that
  refills at ``budget_per_s``; with the budget spent, nothing is checked ("budget"). This caps
  the guesses of an attacker with any number of addresses, at the price of turning real users
  away while it lasts. With the defaults (100 + 0.5/s, records forgotten after an hour) at most
  1,900 records can be under penalty, far below ``max_clients``: the budget binds first.
- **hash slots**: at most ``concurrent`` hashes run at once (scrypt needs 32 MiB each), handed
  out first come first served (``FairSlots``); an attempt that waits longer than ``queue_s`` is
  turned away ("busy"). A plain semaphore let a thread that had just released a slot take it
  again ahead of those waiting, so a stream of attempts could starve a real user.
"""
from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

DELAY_ENV = "AGG2EXP_SIGNIN_DELAY_S"
MAX_CONCURRENT_CHECKS = 2          # password hashes computed at once (scrypt: 32 MiB each)
IPV6_PREFIX = 48                   # an end site's allocation: rotating inside it stays one client


def client_key(ip: str | None) -> str:
    """Throttle key of a client address: the address, IPv6 by its /48 (one site's block)."""
    if not ip:
        return "loopback"
    try:
        address = ipaddress.ip_address(str(ip).strip().strip("[]"))
    except ValueError:
        return str(ip)
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


@dataclass(frozen=True)
class Attempt:
    outcome: str                   # "ok", "wrong", or unchecked: "wait" (this client), "busy" (no hash
                                   # slot), "full" (no room for a new client), "budget" (server-wide)
    wait_s: float = 0.0            # seconds until trying again makes sense


@dataclass
class _Client:
    failures: int = 0
    retry_at: float = 0.0          # clock time before which this client may not try again
    last_seen: float = 0.0
    checking: bool = False         # one of its attempts is being checked right now


class FairSlots:
    """At most ``n`` holders at once, granted in arrival order (a FIFO queue of waiters).

    ``threading.Semaphore`` wakes a waiter on release but lets any running thread take the
    slot first; this hands it to the longest waiter.
    """

    def __init__(self, n: int) -> None:
        self._free = n
        self._queue: deque = deque()
        self._cond = threading.Condition()

    def acquire(self, timeout: float) -> bool:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            granted = self._cond.wait_for(lambda: self._queue[0] is ticket and self._free > 0, timeout)
            if granted:
                self._free -= 1
            self._queue.remove(ticket)
            self._cond.notify_all()   # the next in line may go now (or after a timed-out ticket left)
            return granted

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()


@dataclass
class PasswordThrottle:
    """Failed sign-ins per client, server-wide, and hash slots (see the module's docstring)."""

    concurrent: int = MAX_CONCURRENT_CHECKS
    base_delay: float = 1.0
    max_delay: float = 30.0
    queue_s: float = 5.0
    forget_s: float = 3600.0       # a client's failures are forgotten after this long without one
    max_clients: int = 10_000      # bounded memory: records held at most (never evicted while in force)
    budget_failures: float = 100.0  # server-wide failures allowed in a burst ...
    budget_per_s: float = 0.5      # ... and refilled per second
    clock: Callable[[], float] = time.monotonic
    _clients: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)
    _slots: Any = field(default=None, repr=False)
    _tokens: float = field(default=0.0, repr=False)
    _refilled_at: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._slots = FairSlots(self.concurrent)
        self._tokens = self.budget_failures

    def attempt(self, key: str, check: Callable[[], bool]) -> Attempt:
        """Run ``check`` (the password comparison) for client ``key`` unless a limit says no."""
        with self._lock:
            refusal, client = self._admit(key, self.clock())
            if refusal is not None:
                return refusal
        ok: bool | None = None                  # None: no slot was free, nothing was checked
        try:
            if self._slots.acquire(timeout=self.queue_s):
                try:
                    ok = bool(check())
                finally:
                    self._slots.release()
        finally:
            with self._lock:
                now = self._settle(key, client, ok)
        if ok is None:
            return Attempt("busy", self.queue_s)
        return Attempt("ok") if ok else Attempt("wrong", client.retry_at - now)

    def _admit(self, key: str, now: float) -> tuple[Attempt | None, _Client | None]:
        """(refusal, None) or (None, the client's record marked as checking, a budget token reserved)."""
        self._forget(now)
        self._refill(now)
        client = self._clients.get(key)
        if client is not None and (client.checking or now < client.retry_at):
            return Attempt("wait", max(client.retry_at - now, 1.0)), None
        if client is None and len(self._clients) >= self.max_clients:
            return Attempt("full", max(self._first_expiry(now) - now, 1.0)), None
        if self._tokens < 1.0:
            return Attempt("budget", max((1.0 - self._tokens) / self.budget_per_s, 1.0)), None
        self._tokens -= 1.0                     # reserved: checks in flight count against the budget
        client = self._clients.setdefault(key, _Client(last_seen=now))
        client.checking = True
        return None, client

    def _settle(self, key: str, client: _Client, ok: bool | None) -> float:
        now = client.last_seen = self.clock()
        client.checking = False
        if ok is not False:                     # a success or an unchecked attempt gives its token back
            self._tokens = min(self._tokens + 1.0, self.budget_failures)
        if ok:
            self._clients.pop(key, None)
        elif ok is False:
            client.failures += 1
            client.retry_at = now + min(self.base_delay * 2.0 ** (client.failures - 1), self.max_delay)
        elif client.failures == 0:
            self._clients.pop(key, None)        # nothing on record: no need to hold a place
        return now

    def _refill(self, now: float) -> None:
        if self._refilled_at is not None:
            self._tokens = min(self._tokens + (now - self._refilled_at) * self.budget_per_s, self.budget_failures)
        self._refilled_at = now

    def _expiry(self, client: _Client) -> float:
        return max(client.retry_at, client.last_seen + self.forget_s)

    def _first_expiry(self, now: float) -> float:
        return min((self._expiry(c) for c in self._clients.values() if not c.checking), default=now + self.queue_s)

    def _forget(self, now: float) -> None:
        """Drop records whose penalty is over and whose last failure is ``forget_s`` old; never others."""
        stale = [k for k, c in self._clients.items() if not c.checking and now >= self._expiry(c)]
        for key in stale:
            del self._clients[key]


def base_delay_from_env() -> float:
    """``AGG2EXP_SIGNIN_DELAY_S``: the wait after a first failed sign-in (1 s by default, 1 s to 1 h)."""
    try:
        return min(max(1.0, float(os.environ.get(DELAY_ENV, "1"))), 3600.0)
    except ValueError:
        return 1.0
