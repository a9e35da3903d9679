"""Loop supervision and the per-key locks (in memory: no servers)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from broker_bridge.concurrency import KeyedLocks
from broker_bridge.supervise import LoopControl, LoopSpec, Supervisor
from pool.errors import StoreError
from pool.health import Health
from tests.bridge_fakes import FakeDrp, FlakySink, MemSink, wait_until
from tests.unit.test_bridge_faults import bridge_for, stop_bridge


def test_a_loop_that_ends_is_restarted_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    health = Health("test")
    runs: list[int] = []

    async def once(loop: LoopControl) -> None:  # a buggy loop: returns after one round
        runs.append(1)
        loop.ok()

    async def scenario() -> None:
        stop = asyncio.Event()
        supervisor = Supervisor(health, stop, backoff_base_s=0.01, backoff_cap_s=0.02)
        task = asyncio.ensure_future(supervisor.run({"once": LoopSpec(once, 60.0)}))
        await wait_until(lambda: len(runs) >= 3)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    state = {s.name: s for s in health.loops()}["once"]
    assert state.restarts >= 2
    assert state.stopped
    assert "LoopEndedError" in (state.last_error or "")
    assert any("loop ended; restarting" in r.getMessage() for r in caplog.records)


def test_failures_are_logged_by_kind_counted_and_backed_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    health = Health("test")
    errors: list[Exception] = [StoreError("redis down"), ValueError("a bug")]
    delays: list[float] = []
    real_sleep = LoopControl.sleep

    async def sleep(self: LoopControl, seconds: float) -> None:
        delays.append(seconds)
        await real_sleep(self, 0.001)

    monkeypatch.setattr(LoopControl, "sleep", sleep)

    async def flaky(loop: LoopControl) -> None:
        while not loop.stopping:
            if errors:
                await loop.failed(errors.pop(0), "round")
            else:
                loop.ok()
                await asyncio.sleep(0.001)

    async def scenario() -> None:
        stop = asyncio.Event()
        supervisor = Supervisor(health, stop, backoff_base_s=0.05, backoff_cap_s=1.0)
        task = asyncio.ensure_future(supervisor.run({"flaky": LoopSpec(flaky, 60.0)}))
        await wait_until(lambda: not errors and health.loops()[0].last_ok is not None)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert health.loops()[0].restarts == 2
    assert 0.025 <= delays[0] <= 0.05  # backed off (upper half of base 0.05 s), no busy loop
    assert 0.05 <= delays[1] <= 0.1  # and doubled the second time
    expected = [r for r in caplog.records if "redis down" in r.getMessage()]
    assert [r.levelno for r in expected] == [logging.WARNING]
    assert expected[0].exc_info is None  # an expected error: one line
    bug = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert [r.levelno for r in bug] == [logging.ERROR]
    assert bug[0].exc_info is not None  # anything else: with its traceback


def test_health_reports_a_resync_that_keeps_failing() -> None:
    """No resync succeeded for 2 x resync_s: the bridge's health names the resync loop."""
    drp = FakeDrp()
    drp.stream = [[]]
    sink = FlakySink(MemSink())  # Redis refuses everything, for good

    async def scenario() -> list[str]:
        bridge = bridge_for(drp, sink, resync_s=0.1, backoff_base_s=0.01, backoff_cap_s=0.05)
        stop = asyncio.Event()
        run = asyncio.ensure_future(bridge.run(stop))
        try:
            await wait_until(lambda: bridge.health.problems())
            return bridge.health.problems()
        finally:
            await stop_bridge(run, stop)

    problems = asyncio.run(scenario())
    assert any(p.startswith("resync:") for p in problems)
    assert not any(p.startswith(("intake:", "flusher:")) for p in problems)


def test_keyed_locks_serialise_in_order_and_keep_nothing_at_rest() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def job(name: str, keys: list[str], hold_s: float) -> None:
        async with locks.hold_all(keys):
            order.append(name)
            await asyncio.sleep(hold_s)

    async def scenario() -> None:
        first = asyncio.ensure_future(job("a", ["m1", "m2"], 0.05))
        await asyncio.sleep(0)
        assert locks.busy("m1")
        assert locks.busy("m2")
        jobs = [asyncio.ensure_future(job(n, ["m2"], 0.0)) for n in ("b", "c")]
        cancelled = asyncio.ensure_future(job("x", ["m1"], 0.0))
        await asyncio.sleep(0.01)
        cancelled.cancel()  # a waiter that leaves must not keep or lose the key
        await asyncio.gather(first, *jobs, cancelled, return_exceptions=True)

    asyncio.run(scenario())
    assert order == ["a", "b", "c"]
    assert len(locks) == 0


def test_keyed_locks_do_not_deadlock_on_overlapping_sets() -> None:
    locks = KeyedLocks()
    done: list[Any] = []

    async def job(keys: list[str]) -> None:
        async with locks.hold_all(keys):
            await asyncio.sleep(0.001)
            done.append(keys)

    async def scenario() -> None:
        await asyncio.wait_for(
            asyncio.gather(*(job(k) for k in (["a", "b"], ["b", "a"], ["b", "c"], ["c", "a"]))),
            5,
        )

    asyncio.run(scenario())
    assert len(done) == 4
    assert len(locks) == 0
