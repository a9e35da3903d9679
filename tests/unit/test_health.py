"""Loop supervision bookkeeping (pure, injected clock)."""

from __future__ import annotations

from pool.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_is_unhealthy_when_stale_or_stopped() -> None:
    clock = Clock()
    health = Health("node", clock)
    health.register("heartbeat", stale_after_s=30)
    assert health.problems() == []  # just started: within its first period
    clock.now += 31
    assert health.problems() == ["heartbeat: no success yet 31s ago > 30s"]
    health.ok("heartbeat")
    assert health.problems() == []
    health.failed("heartbeat", RuntimeError("redis down"))
    clock.now += 40
    [problem] = health.problems()
    assert "last success 40s ago" in problem
    assert "RuntimeError: redis down" in problem
    health.ok("heartbeat")
    health.stopped("heartbeat")
    assert health.problems() == ["heartbeat: loop stopped"]
    health.register("heartbeat", stale_after_s=30)  # restarted: restarts are kept
    assert health.report()["loops"]["heartbeat"]["restarts"] == 1
