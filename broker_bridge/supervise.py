"""Loop supervision (DESIGN.md invariant 9): every long-running loop of the bridge survives
any exception with a logged, counted backoff, and one that ends anyway is restarted.

A loop is an ``async def body(loop: LoopControl)`` that runs until ``loop.stopping``. Inside,
it reports each successful round with :meth:`LoopControl.ok` and hands every exception it
caught to :meth:`LoopControl.failed`, which logs it (expected ``CtxpoolError`` s in one line,
anything else with its traceback), counts it in :class:`~pool.health.Health` and sleeps a
capped, jittered, growing delay. :class:`Supervisor` starts the loops and watches their tasks:
a task that ends before shutdown (it returned, or an exception escaped it) is logged, counted
and started again after the same backoff. ``Health`` then feeds ``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pool.backoff import Backoff
from pool.drp.errors import DrpAuthError
from pool.errors import CtxpoolError
from pool.health import Health

log = logging.getLogger(__name__)


class LoopEndedError(RuntimeError):
    """A supervised loop's task ended while the component was not stopping."""


class LoopControl:
    """What a loop body gets: its health reporting, its backoff and the stop flag."""

    def __init__(self, name: str, health: Health, stop: asyncio.Event, backoff: Backoff) -> None:
        self.name = name
        self.health = health
        self.stop = stop
        self.backoff = backoff

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def ok(self) -> None:
        """A round succeeded: healthy again, and the next failure backs off from the start."""
        self.health.ok(self.name)
        self.backoff.reset()

    async def failed(self, exc: BaseException, what: str = "") -> None:
        """A round failed with ``exc``: log it, count it, then back off (or return at stop)."""
        delay_s = self.backoff.next_s()
        self.health.failed(self.name, exc)
        doing = f" {what}" if what else ""
        if isinstance(exc, DrpAuthError):
            log.error("%s%s: DRP refused the bridge's credentials (%s); retrying in %.1fs",
                      self.name, doing, exc, delay_s)  # fmt: skip
        elif isinstance(exc, CtxpoolError):
            log.warning("%s%s failed: %s; retrying in %.1fs", self.name, doing, exc, delay_s)
        else:
            log.error("%s%s failed unexpectedly; retrying in %.1fs", self.name, doing, delay_s,
                      exc_info=exc)  # fmt: skip
        await self.sleep(delay_s)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the component stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)


#: A loop body: runs until ``loop.stopping``.
LoopBody = Callable[[LoopControl], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LoopSpec:
    body: LoopBody
    #: Unhealthy when no round succeeded for this long (``inf``: only when dead).
    stale_after_s: float


class Supervisor:
    """Runs named loops until ``stop`` is set, restarting any that ends before."""

    def __init__(
        self,
        health: Health,
        stop: asyncio.Event,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
    ) -> None:
        self.health = health
        self.stop = stop
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.controls: dict[str, LoopControl] = {}

    async def run(self, loops: Mapping[str, LoopSpec]) -> None:
        """Run ``loops`` until ``stop``; then cancel them and mark them stopped."""
        tasks: dict[str, asyncio.Task[None]] = {}
        for name, spec in loops.items():
            self.health.register(name, spec.stale_after_s)
            self.controls[name] = LoopControl(
                name, self.health, self.stop, Backoff(self.backoff_base_s, self.backoff_cap_s)
            )
            tasks[name] = self._start(name, spec.body, 0.0)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            while not self.stop.is_set():
                await asyncio.wait({stopping, *tasks.values()}, return_when="FIRST_COMPLETED")
                for name, task in list(tasks.items()):
                    if task.done() and not self.stop.is_set():
                        delay_s = self._ended(name, task)
                        tasks[name] = self._start(name, loops[name].body, delay_s)
        finally:
            stopping.cancel()
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(stopping, *tasks.values(), return_exceptions=True)
            for name in tasks:
                self.health.stopped(name)

    def _start(self, name: str, body: LoopBody, delay_s: float) -> asyncio.Task[None]:
        control = self.controls[name]

        async def run() -> None:
            if delay_s:
                await control.sleep(delay_s)
            if not control.stopping:
                await body(control)

        task = asyncio.ensure_future(run())
        task.set_name(f"bridge loop {name}")
        return task

    def _ended(self, name: str, task: asyncio.Task[None]) -> float:
        """Log and count a loop task that ended early; the delay before its restart."""
        control = self.controls[name]
        delay_s = control.backoff.next_s()
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            how = "was cancelled" if task.cancelled() else "returned"
            exc = LoopEndedError(f"loop {name} {how}")
            log.error("%s: loop ended; restarting it in %.1fs", name, delay_s)
        else:
            log.error("%s: loop ended by an exception; restarting it in %.1fs", name, delay_s,
                      exc_info=exc)  # fmt: skip
        self.health.failed(name, exc)
        return delay_s


__all__ = ["LoopBody", "LoopControl", "LoopEndedError", "LoopSpec", "Supervisor"]
