"""Per-process runtime: the clients a node or producer process needs, built lazily.

One :class:`Runtime` hangs off the Celery app. Prefork children rebuild their clients after
the fork (``worker_process_init``); the node identity is fixed by the worker bootstep in the
main process before children are forked.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from pool.celery_app import DRP_TASK, RECONCILE_TASK
from pool.drpcalls import DrpCall
from pool.engine import DockerEngine
from pool.errors import ConfigError
from pool.limiter import RedisLimiter
from pool.models import Nudge
from pool.reconcile import NodeIdentity, Reconciler
from pool.settings import Settings
from pool.store import StateStore
from pool.sweep import Sweeper

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pool.celery_app import CtxpoolCelery
    from pool.contexts import ContextAPI


class Runtime:
    """Lazily built clients for one process."""

    def __init__(self, app: CtxpoolCelery) -> None:
        self.app = app
        self.identity: NodeIdentity | None = None
        self._lock = threading.Lock()
        self._store: StateStore | None = None
        self._engine: DockerEngine | None = None
        self._reconciler: Reconciler | None = None
        self._limiter: RedisLimiter | None = None

    @property
    def settings(self) -> Settings:
        return self.app.ctxpool_settings

    def reset_clients(self) -> None:
        """Drop clients inherited over a fork (sockets must not be shared)."""
        with self._lock:
            self._store = None
            self._engine = None
            self._reconciler = None
            self._limiter = None

    @property
    def store(self) -> StateStore:
        with self._lock:
            if self._store is None:
                s = self.app.ctxpool_settings
                self._store = StateStore.from_url(s.redis_url, s.key_prefix)
            return self._store

    @property
    def limiter(self) -> RedisLimiter:
        with self._lock:
            if self._limiter is None:
                s = self.app.ctxpool_settings
                self._limiter = RedisLimiter.from_url(s.redis_url, s.key_prefix)
            return self._limiter

    @property
    def engine(self) -> DockerEngine:
        with self._lock:
            if self._engine is None:
                self._engine = DockerEngine.from_settings(self.app.ctxpool_settings)
            return self._engine

    @property
    def reconciler(self) -> Reconciler:
        if self.identity is None:
            raise ConfigError("this process is not a ctxpool node (no worker identity)")
        store, engine = self.store, self.engine
        with self._lock:
            if self._reconciler is None:
                settings = self.app.ctxpool_settings
                self._reconciler = Reconciler(
                    store,
                    engine,
                    settings,
                    self.identity,
                    self.publish,
                    self.report_to_drp if settings.drp_url else None,
                )
            return self._reconciler

    def sweeper(self) -> Sweeper:
        return Sweeper(self.reconciler, self.publish, self.queue_depth)

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

    @property
    def api(self) -> ContextAPI:
        from pool.contexts import ContextAPI

        return ContextAPI(self.store, self.publish)

    def report_to_drp(self, call: DrpCall) -> None:
        """Queue a DRP API call through ``tasks.integrations.drp`` (bound by ``drp-api``)."""
        self.app.tasks[DRP_TASK].apply_async(kwargs={"call": call.model_dump(mode="json")})

    def publish(self, nudge: Nudge, queue: str) -> None:
        """Send a reconcile nudge to ``queue`` (declared on first use, so it waits there)."""
        self.app.send_task(RECONCILE_TASK, kwargs={"nudge": nudge.model_dump()}, queue=queue)


_runtimes: dict[int, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime(app: CtxpoolCelery) -> Runtime:
    """The runtime of ``app`` in this process."""
    with _runtimes_lock:
        rt = _runtimes.get(id(app))
        if rt is None:
            rt = _runtimes[id(app)] = Runtime(app)
        return rt
