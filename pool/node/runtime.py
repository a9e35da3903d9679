"""A node's runtime: the producer runtime plus the Docker engine, the reconciler and the sweeps.

The composition root of a node: it wires the reconciler's outcomes to DRP write-back when
``CTXPOOL_DRP_URL`` is set. The node identity is fixed by the worker bootstep in the main
process before pool children are forked.
"""

from __future__ import annotations

import logging
from typing import Any

from pool.admin import AdminStatus
from pool.calls.drp import DrpCall, DrpWriteBack
from pool.contexts.engine import DockerEngine
from pool.contexts.outcomes import NodeIdentity
from pool.contexts.reconcile import Reconciler
from pool.contexts.sources import node_engine
from pool.contexts.sweep import Sweeper
from pool.drp.errors import DrpConfigError
from pool.errors import ConfigError
from pool.health import Health
from pool.node.enginestate import EngineState
from pool.queues import DRP_TASK
from pool.runtime import AppLike, Runtime

log = logging.getLogger(__name__)


class NodeRuntime(Runtime):
    """Lazily built clients of one node process."""

    def __init__(self, app: AppLike) -> None:
        super().__init__(app)
        self.identity: NodeIdentity | None = None
        #: ``-Q`` of the worker command line (``None``: not given), from ``celeryd_init``.
        self.cli_queues: list[str] | None = None
        #: Whether the capacity gate has closed the tag queues (shown in the heartbeat).
        self.gated = False
        #: The drain's latest state and progress (``pool.node.drain``; shown in the heartbeat).
        self.drain_status = AdminStatus()
        self.docker_version = ""
        self.health = Health("node")
        #: The engine watch's view of the engine (main process).
        self.engine_state = EngineState()
        self._engine: DockerEngine | None = None
        self._reconciler: Reconciler | None = None

    def reset_clients(self) -> None:
        super().reset_clients()
        with self._lock:
            self._engine = None
            self._reconciler = None

    @property
    def engine(self) -> DockerEngine:
        """The Docker engine, with images and drpcli from DRP when ``CTXPOOL_DRP_URL`` is set."""
        settings = self.settings
        if self._engine is not None:
            return self._engine
        store = self.store
        tokens = None
        if settings.drp_url:
            try:
                tokens = self.drp_tokens
            except DrpConfigError as exc:  # the write-back reports it on every call, too
                log.error("DRP settings are invalid, images and drpcli not from DRP: %s", exc)
        node = self.identity.name if self.identity is not None else settings.node_name
        with self._lock:
            if self._engine is None:
                self._engine = node_engine(settings, store.redis, store.keys, node, tokens)
            return self._engine

    @property
    def reconciler(self) -> Reconciler:
        """Raises: ConfigError when this process is not a started node."""
        if self.identity is None:
            raise ConfigError("this process is not a ctxpool node (no worker identity)")
        store, engine = self.store, self.engine
        with self._lock:
            if self._reconciler is None:
                settings = self.settings
                self._reconciler = Reconciler(
                    store,
                    engine,
                    settings,
                    self.identity,
                    self.publish,
                    DrpWriteBack(self.send_drp_call) if settings.drp_url else None,
                )
            return self._reconciler

    def sweeper(self) -> Sweeper:
        return Sweeper(self.reconciler, self.publish, self.queue_depth)

    def send_drp_call(self, call: DrpCall) -> None:
        """Queue a DRP API call through ``tasks.integrations.drp`` (bound by ``drp-api``)."""
        # through the task's own apply_async: LimitedTask routes it to limit-drp-api
        self.app.tasks[DRP_TASK].apply_async(kwargs={"call": call.model_dump(mode="json")})


def node_runtime(app: Any) -> NodeRuntime:
    """The runtime of a node's app.

    Raises:
        ConfigError: ``app`` is a producer app (built without ``NodeRuntime``).
    """
    rt = app.runtime
    if not isinstance(rt, NodeRuntime):
        raise ConfigError("this app is not a ctxpool node app (use pool.celery:app)")
    return rt
