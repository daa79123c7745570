"""The sign-in throttle on its own (a settable clock, no Streamlit): per client, server-wide, hash slots.

The attacks of issue #21 are played at a small capacity (the same code path as 10,000 clients):
rotating addresses must not wipe penalties nor lock real users out of the hash slots.
"""
from __future__ import annotations

import threading
import time

import pytest

from access import Clock
from dashboard.auth import throttle

ROOMY = {"budget_failures": 1e9}          # no server-wide limit: look at one limit at a time


def wrong() -> bool:
    return False


def test_throttle_delays_grow_per_address_and_spare_other_addresses():
    clock = Clock()
    limits = throttle.PasswordThrottle(clock=clock, max_delay=8.0, forget_s=600.0)
    checked = []

    def counted_wrong():
        checked.append(1)
        return False

    assert limits.attempt("198.51.100.4", counted_wrong) == throttle.Attempt("wrong", 1.0)
    assert limits.attempt("198.51.100.4", counted_wrong).outcome == "wait" and len(checked) == 1
    assert limits.attempt("203.0.113.9", counted_wrong).outcome == "wrong", "another address is not held up"
    delays = []
    for _ in range(5):
        clock.now += 60.0 if not delays else delays[-1]
        delays.append(limits.attempt("198.51.100.4", counted_wrong).wait_s)
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 8.0
    assert limits.attempt("198.51.100.4", lambda: True) == throttle.Attempt("ok")
    assert limits.attempt("198.51.100.4", counted_wrong).wait_s == 1.0, "success clears the record"
    clock.now += 601.0
    assert limits.attempt("198.51.100.4", counted_wrong).wait_s == 1.0, "old failures are forgotten"


def test_one_check_per_address_and_a_cap_on_concurrent_hashes():
    limits = throttle.PasswordThrottle(concurrent=2, queue_s=0.3)
    release, started = threading.Event(), threading.Semaphore(0)
    results = {}

    def slow_wrong():
        started.release()
        release.wait(10)
        return False

    workers = [threading.Thread(target=lambda k=k: results.setdefault(k, limits.attempt(k, slow_wrong)))
               for k in ("a", "b")]
    for worker in workers:
        worker.start()
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    ran = []
    assert limits.attempt("a", lambda: ran.append(1)).outcome == "wait", "one check per address at a time"
    t0 = time.monotonic()
    assert limits.attempt("c", lambda: ran.append(1)).outcome == "busy", "both hash slots are taken"
    assert 0.25 < time.monotonic() - t0 < 5 and ran == []
    release.set()
    for worker in workers:
        worker.join(10)
    assert results["a"].outcome == results["b"].outcome == "wrong"
    assert limits.attempt("c", lambda: True).outcome == "ok", "slots are given back"


def test_client_keys_group_ipv6_by_48():
    assert throttle.client_key(None) == throttle.client_key("") == "loopback"
    assert throttle.client_key("198.51.100.4") == "198.51.100.4"
    assert throttle.client_key("::ffff:198.51.100.4") == "198.51.100.4"
    same_site = ("2001:db8:1:2::5", "2001:db8:1:2:ffff::1", "2001:db8:1:3::5", "[2001:db8:1:ffff::9]")
    assert {throttle.client_key(a) for a in same_site} == {"2001:db8:1::/48"}
    assert throttle.client_key("2001:db8:2::5") != throttle.client_key("2001:db8:1::5")


def test_rotating_ipv6_inside_a_48_stays_one_client():
    """Every /64 of a /48 is one client: the second guess from the next /64 waits, unchecked."""
    limits = throttle.PasswordThrottle(clock=Clock(), **ROOMY)
    checked = []
    outcomes = [limits.attempt(throttle.client_key(f"2001:db8:1:{n:x}::1"), lambda: checked.append(1) or False).outcome
                for n in range(100)]
    assert outcomes == ["wrong"] + ["wait"] * 99 and len(checked) == 1


@pytest.mark.parametrize("capacity", [3, 50])
def test_rotating_addresses_cannot_evict_a_penalty(capacity):
    """More addresses than the table holds: no record under penalty is dropped to make room;
    a new address is refused ("full", unchecked) until a record expires."""
    clock = Clock()
    limits = throttle.PasswordThrottle(clock=clock, max_clients=capacity, forget_s=600.0, max_delay=30.0, **ROOMY)
    for _ in range(3):                                   # the victim of eviction: three failures, 4 s penalty
        assert limits.attempt("198.51.100.4", wrong).outcome == "wrong"
        clock.now += 30.0
    checked = []
    rotation = [limits.attempt(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", lambda: checked.append(1) or False)
                for i in range(capacity + 1)]           # capacity + 1 fresh addresses, one guess each
    assert [r.outcome for r in rotation].count("wrong") == capacity - 1
    assert {r.outcome for r in rotation[capacity - 1:]} == {"full"} and len(checked) == capacity - 1
    assert len(limits._clients) == capacity, "memory stays bounded"
    assert limits.attempt("198.51.100.4", wrong).outcome == "wrong", "the victim's record is kept ..."
    assert limits.attempt("198.51.100.4", wrong) == throttle.Attempt("wait", 8.0), "... and its penalty grows"
    full = limits.attempt("192.0.2.1", wrong)
    assert full.outcome == "full" and 599.0 <= full.wait_s <= 600.0, "told when a place frees up"
    clock.now += 601.0
    assert limits.attempt("192.0.2.1", wrong).outcome == "wrong", "expired records make room"


def test_server_wide_budget_caps_guesses_from_any_number_of_addresses():
    clock = Clock()
    limits = throttle.PasswordThrottle(clock=clock, budget_failures=5, budget_per_s=0.5)
    checked = []
    outcomes = [limits.attempt(f"203.0.113.{i}", lambda: checked.append(1) or False) for i in range(20)]
    assert [o.outcome for o in outcomes] == ["wrong"] * 5 + ["budget"] * 15 and len(checked) == 5
    assert outcomes[5].wait_s == 2.0, "one failure refills in 1 / budget_per_s seconds"
    assert limits.attempt("198.51.100.4", lambda: True).outcome == "budget", "everyone waits while it is spent"
    clock.now += 2.0
    assert limits.attempt("198.51.100.4", wrong).outcome == "wrong"
    assert limits.attempt("198.51.100.5", wrong).outcome == "budget"
    clock.now += 100.0                                   # refills up to the burst, not beyond
    assert [limits.attempt(f"192.0.2.{i}", wrong).outcome for i in range(7)] == ["wrong"] * 5 + ["budget"] * 2


def test_successes_and_unchecked_attempts_spend_no_budget():
    limits = throttle.PasswordThrottle(clock=Clock(), budget_failures=2, budget_per_s=0.001)
    for i in range(50):
        assert limits.attempt(f"203.0.113.{i}", lambda: True).outcome == "ok"
    assert limits.attempt("198.51.100.4", wrong).outcome == "wrong"
    for _ in range(20):
        assert limits.attempt("198.51.100.4", wrong).outcome == "wait"
    assert limits.attempt("198.51.100.9", wrong).outcome == "wrong", "throttled attempts did not spend it"


def test_the_default_budget_binds_before_the_table_fills():
    """Failures possible while a record lives (burst + refill over forget_s) fit in max_clients."""
    limits = throttle.PasswordThrottle()
    assert limits.budget_failures + limits.budget_per_s * limits.forget_s < limits.max_clients


def test_hash_slots_are_granted_in_arrival_order():
    slots = throttle.FairSlots(1)
    assert slots.acquire(timeout=1)
    order, threads = [], []
    for name in "abc":
        thread = threading.Thread(target=lambda n=name: slots.acquire(timeout=10) and (order.append(n), slots.release()))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while len(slots._queue) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.005)
    slots.release()
    for thread in threads:
        thread.join(10)
    assert order == ["a", "b", "c"]
    assert slots.acquire(timeout=0.0), "the slot is free again"


def test_a_stream_of_rotating_guesses_cannot_starve_a_real_user():
    """Two attackers on fresh addresses keep both hash slots busy; a real user who arrives
    in the middle is checked within a few hashes, not turned away after queue_s."""
    limits = throttle.PasswordThrottle(concurrent=2, queue_s=2.0, **ROOMY)
    stop, counter = threading.Event(), iter(range(10 ** 9))

    def attacker():
        while not stop.is_set():
            limits.attempt(f"10.9.{next(counter)}", lambda: time.sleep(0.01) or False)

    attackers = [threading.Thread(target=attacker) for _ in range(4)]
    for thread in attackers:
        thread.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    result = limits.attempt("198.51.100.4", lambda: True)
    waited = time.monotonic() - t0
    stop.set()
    for thread in attackers:
        thread.join(10)
    assert result.outcome == "ok" and waited < 1.0, (result, waited)
