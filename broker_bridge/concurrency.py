"""Two small asyncio helpers the bridge's jobs share: per-key locks that free themselves, and
a set of background tasks one can wait for."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)


class KeyedLocks:
    """Exclusive holds on keys, FIFO per key. A key has an entry only while someone holds or
    waits for it, so a bridge that sees millions of machines keeps none at rest.

    :meth:`hold` takes several keys at once, in sorted order (two holders of overlapping key
    sets cannot deadlock); free keys are taken without yielding, so a task that holds nothing
    else gets them in the order it was started.
    """

    def __init__(self) -> None:
        #: key held -> its waiters (None until someone waits: most keys never see a second
        #: holder, and a resync takes 10,000 of them)
        self._waiters: dict[str, deque[asyncio.Future[None]] | None] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def busy(self, key: str) -> bool:
        """Whether someone holds ``key``."""
        return key in self._waiters

    @asynccontextmanager
    async def hold(self, *keys: str) -> AsyncIterator[None]:
        """Hold every key of ``keys`` (duplicates allowed) until the block ends."""
        taken = await self._acquire(sorted(set(keys)))
        try:
            yield
        finally:
            self._release(taken)

    @asynccontextmanager
    async def hold_all(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """:meth:`hold` for an iterable of keys."""
        async with self.hold(*keys):
            yield

    async def _acquire(self, keys: list[str]) -> list[str]:
        taken: list[str] = []
        try:
            for key in keys:
                if key not in self._waiters:
                    self._waiters[key] = None
                else:
                    waiters = self._waiters[key]
                    if waiters is None:
                        waiters = self._waiters[key] = deque()
                    turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    waiters.append(turn)
                    try:
                        await turn  # the holder hands the key over on release
                    except asyncio.CancelledError:
                        if turn.done() and not turn.cancelled():
                            self._release([key])  # handed over, but we are leaving
                        elif turn in waiters:
                            waiters.remove(turn)
                        raise
                taken.append(key)
        except BaseException:
            self._release(taken)
            raise
        return taken

    def _release(self, keys: list[str]) -> None:
        for key in keys:
            waiters = self._waiters[key]
            while waiters:
                turn = waiters.popleft()
                if not turn.done():
                    turn.set_result(None)  # the key passes to this waiter, still held
                    break
            else:
                del self._waiters[key]


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
