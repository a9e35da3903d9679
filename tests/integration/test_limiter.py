"""Every limiter backend passes the same tests: memory (fake clock) and Redis (real server)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pool.limits.limiter import Limiter, MemoryLimiter, RedisLimiter
from pool.limits.spec import LimitSpec
from tests import support

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    limiter: Limiter
    advance: Callable[[float], None]
    tolerance_s: float  # how far a reported wait may be off (network round trips on Redis)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        def advance(seconds: float) -> None:
            clock.now += seconds

        yield Backend(MemoryLimiter(clock), advance, 1e-9)
        return
    client = support.redis_client()
    prefix = f"ctxpool-test-{secrets.token_hex(3)}:"
    yield Backend(RedisLimiter(client, prefix), time.sleep, 0.03)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def test_burst_then_steady_rate(backend: Backend) -> None:
    spec = LimitSpec.parse("5/s burst 3")  # one token per 0.2 s
    lim = backend.limiter
    assert [lim.acquire("l", "*", spec, f"h{i}").granted for i in range(3)] == [True] * 3
    denied = lim.acquire("l", "*", spec, "h3")
    assert not denied.granted
    assert denied.reason == "rate"
    assert denied.wait_s == pytest.approx(0.2, abs=backend.tolerance_s)
    backend.advance(denied.wait_s + 0.005)
    assert lim.acquire("l", "*", spec, "h3").granted
    assert not lim.acquire("l", "*", spec, "h4").granted


def test_denials_do_not_consume(backend: Backend) -> None:
    spec = LimitSpec.parse("5/s")
    lim = backend.limiter
    assert lim.acquire("l", "*", spec, "a").granted
    for _ in range(20):  # hammering while denied must not push the next token further away
        assert not lim.acquire("l", "*", spec, "b").granted
    wait = lim.acquire("l", "*", spec, "b").wait_s
    assert wait <= 0.2 + backend.tolerance_s
    backend.advance(wait + 0.005)
    assert lim.acquire("l", "*", spec, "b").granted


def test_concurrency_slots_and_no_token_waste(backend: Backend) -> None:
    spec = LimitSpec.parse("10/s burst 10 concurrency 2")  # slow refill: a stable reading
    lim = backend.limiter
    assert lim.acquire("c", "*", spec, "a").granted
    assert lim.acquire("c", "*", spec, "b").granted
    before = lim.bucket("c", "*", spec)
    assert before.in_flight == 2
    full = lim.acquire("c", "*", spec, "x")
    assert (full.granted, full.reason) == (False, "concurrency")
    after = lim.bucket("c", "*", spec)
    assert after.tokens == pytest.approx(before.tokens, abs=0.5)  # refused: no token taken
    lim.release("c", "*", "a")
    assert lim.acquire("c", "*", spec, "x").granted
    assert lim.bucket("c", "*", spec).in_flight == 2


def test_dead_holder_slot_comes_back_after_ttl(backend: Backend) -> None:
    spec = LimitSpec.parse("1000/s burst 10 concurrency 1 slot-ttl 0.3s")
    lim = backend.limiter
    assert lim.acquire("d", "*", spec, "crashed").granted  # never released
    assert not lim.acquire("d", "*", spec, "next").granted
    backend.advance(0.35)
    assert lim.acquire("d", "*", spec, "next").granted
    assert not lim.renew("d", "*", spec, "crashed")  # the dead holder lost it


def test_renewed_slot_outlives_its_first_ttl(backend: Backend) -> None:
    spec = LimitSpec.parse("1000/s burst 10 concurrency 1 slot-ttl 0.3s")
    lim = backend.limiter
    assert lim.acquire("r", "*", spec, "live").granted
    backend.advance(0.2)
    assert lim.renew("r", "*", spec, "live")
    backend.advance(0.2)  # past the first TTL, within the renewed one
    assert not lim.acquire("r", "*", spec, "other").granted
    lim.release("r", "*", "live")
    assert lim.acquire("r", "*", spec, "other").granted


def test_penalize_holds_the_bucket_back(backend: Backend) -> None:
    spec = LimitSpec.parse("100/s burst 5")
    lim = backend.limiter
    lim.penalize("p", "host-a", spec, 0.3)
    denied = lim.acquire("p", "host-a", spec, "x")
    assert not denied.granted
    assert denied.wait_s == pytest.approx(0.3, abs=backend.tolerance_s)
    assert lim.acquire("p", "host-b", spec, "x").granted  # other keys are not affected
    backend.advance(0.31)
    assert lim.acquire("p", "host-a", spec, "x").granted


def test_keys_are_independent_and_listed(backend: Backend) -> None:
    spec = LimitSpec.parse("1/s per {host}")
    lim = backend.limiter
    assert lim.acquire("k", "a", spec, "1").granted
    assert not lim.acquire("k", "a", spec, "2").granted
    backend.advance(0.01)
    assert lim.acquire("k", "b", spec, "3").granted
    assert lim.bucket_keys("k") == ["b", "a"]
    state = lim.bucket("k", "a", spec)
    assert state.tokens == 0.0
    assert 0.9 - backend.tolerance_s < state.blocked_s <= 1.0
    assert lim.bucket("k", "never", spec).tokens == 1.0


def test_counters_and_waiting(backend: Backend) -> None:
    lim = backend.limiter
    lim.count("s", "granted", 3)
    lim.count("s", "throttled")
    assert lim.counters("s") == {
        "granted": 3,
        "throttled": 1,
        "deferred": 0,
        "stale": 0,
        "failed": 0,
    }
    lim.report_waiting("s", "n1", 4)
    lim.report_waiting("s", "n2", 0)
    assert lim.waiting("s", fresh_s=10) == {"n1": 4, "n2": 0}


def test_memory_limiter_is_exact_over_a_long_run() -> None:
    """Pure GCRA arithmetic: greedy callers get exactly burst + rate x time grants."""
    clock = FakeClock()
    lim = MemoryLimiter(clock)
    spec = LimitSpec.parse("20/s burst 5")
    granted = 0
    for _ in range(10_000):  # 10 s in 1 ms steps, asking every step
        if lim.acquire("g", "*", spec, "h").granted:
            granted += 1
        clock.now += 0.001
    assert granted in (5 + 199, 5 + 200)
