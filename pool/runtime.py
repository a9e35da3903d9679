"""Per-process runtime of a producer (bridge, CLI, tests): the clients it needs, built lazily.

One :class:`Runtime` hangs off each Celery app (``app.runtime``). It never loads docker-py; a
node's app uses :class:`pool.node.runtime.NodeRuntime`, which adds the engine, the reconciler
and the sweeps. Prefork children rebuild their clients after the fork
(``worker_process_init``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from pool.calls.records import CallRecords
from pool.contexts.api import ContextAPI
from pool.contexts.models import Nudge
from pool.contexts.store import StateStore
from pool.drp.config import DrpConfig
from pool.drp.sync import TokenSource
from pool.limits.limiter import RedisLimiter
from pool.queues import RECONCILE_TASK
from pool.settings import Settings

log = logging.getLogger(__name__)


class AppLike(Protocol):
    """What the runtime needs of its Celery app."""

    @property
    def ctxpool_settings(self) -> Settings: ...

    @property
    def tasks(self) -> Any: ...

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any: ...

    def connection_for_read(self) -> Any: ...

    def producer_or_acquire(self, producer: Any = None) -> Any: ...

    @property
    def amqp(self) -> Any: ...


class Runtime:
    """Lazily built clients for one process (thread-safe)."""

    def __init__(self, app: AppLike) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._store: StateStore | None = None
        self._limiter: RedisLimiter | None = None
        self._drp_tokens: TokenSource | None = None

    @property
    def settings(self) -> Settings:
        return self.app.ctxpool_settings

    def reset_clients(self) -> None:
        """Drop clients inherited over a fork (sockets must not be shared)."""
        with self._lock:
            self._store = None
            self._limiter = None
            self._drp_tokens = None  # its token is fetched again in this process

    @property
    def store(self) -> StateStore:
        with self._lock:
            if self._store is None:
                s = self.settings
                self._store = StateStore.from_url(s.redis_url, s.key_prefix)
            return self._store

    @property
    def limiter(self) -> RedisLimiter:
        with self._lock:
            if self._limiter is None:
                s = self.settings
                self._limiter = RedisLimiter.from_url(s.redis_url, s.key_prefix)
            return self._limiter

    @property
    def drp_tokens(self) -> TokenSource:
        """This process's DRP token source (built on first use; one user token per process).

        Raises:
            DrpConfigError: ``CTXPOOL_DRP_URL`` or credentials are missing or invalid.
        """
        with self._lock:
            if self._drp_tokens is None:
                self._drp_tokens = TokenSource(DrpConfig.from_settings(self.settings))
            return self._drp_tokens

    @property
    def calls(self) -> CallRecords:
        """Records of integration calls (on the state store's Redis)."""
        return CallRecords(self.store.redis, self.store.keys)

    @property
    def api(self) -> ContextAPI:
        """Desired-state writes plus nudges (what the bridge and producers use)."""
        return ContextAPI(self.store, self.publish, self.publish_many)

    def queue_depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue`` on the broker; ``None`` when it cannot tell."""
        try:
            with self.app.connection_for_read() as conn:
                try:
                    ok = conn.default_channel.queue_declare(queue=queue, passive=True)
                except conn.channel_errors:
                    return 0  # no such queue (on Redis: an empty one): nothing waits
                return int(ok.message_count)
        except Exception as exc:  # broker unreachable: unknown
            log.debug("queue depth of %s unknown: %s", queue, exc)
            return None

    def publish(self, nudge: Nudge, queue: str) -> None:
        """Send a reconcile nudge to ``queue``.

        Celery publishes a named direct queue through the default exchange (routing key = the
        queue's name), so a nudge needs no exchange binding: a Redis that lost its data (and
        kombu's ``_kombu.binding.*`` keys with it) cannot swallow it.
        """
        self.app.send_task(RECONCILE_TASK, kwargs={"nudge": nudge.model_dump()}, queue=queue)

    def publish_many(self, nudges: Sequence[tuple[Nudge, str]]) -> None:
        """Send many nudges (the same messages as :meth:`publish`) through one producer, as
        one broker batch (kombu's ``Producer.batch``: one pipelined round trip on Redis)."""
        if not nudges:
            return
        with self.app.producer_or_acquire() as producer, producer.batch():
            for nudge, queue in nudges:
                self.app.send_task(
                    RECONCILE_TASK,
                    kwargs={"nudge": nudge.model_dump()},
                    queue=queue,
                    producer=producer,
                )
