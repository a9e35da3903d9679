"""Two small asyncio helpers the bridge's jobs share: per-key locks that free themselves, and
a set of background tasks one can wait for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)


class KeyedLocks:
    """One :class:`asyncio.Lock` per key while anyone holds or waits for it; the entry is
    dropped when the last one leaves (so a bridge seeing millions of keys keeps none)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def busy(self, key: str) -> bool:
        """Whether someone holds or waits for ``key`` (a write for it is in flight)."""
        return key in self._locks

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold ``key``'s lock (FIFO among waiters)."""
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class TaskSet:
    """Background tasks started with :meth:`spawn`; :meth:`idle` waits for all of them.

    A task's exception is logged with its traceback (a spawned job must catch what it
    expects; anything reaching here is a bug), never lost silently.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def idle(self) -> None:
        """Wait until no task started so far (or by those) is running."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
