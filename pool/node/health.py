"""The node's start-up checks and its ``/healthz`` + ``/metrics`` endpoint."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from pool.errors import CtxpoolError
from pool.health import HealthServer, serve_health
from pool.node.enginestate import EngineCollector
from pool.node.metrics import node_collectors
from pool.node.runtime import node_runtime

log = logging.getLogger(__name__)


class NodeHealthStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Reads the engine's version and checks Redis's configuration once at start (problems
    are logged, never fatal: the loops report them), then serves ``/healthz`` (503 when a
    loop is dead or stale) and ``/metrics`` (loop restarts and ages) on
    ``CTXPOOL_NODE_METRICS_PORT`` (0: none): loops, engine, and the node's own metrics
    (:mod:`pool.node.metrics`, every pool process merged)."""

    label = "ctxpool-health"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.server: HealthServer | None = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Any) -> None:
        rt = node_runtime(consumer.app)
        if rt.identity is None:
            return
        name = rt.identity.name
        try:
            rt.docker_version = rt.engine.version()
        except CtxpoolError as exc:
            rt.docker_version = "unreachable"
            log.error("node %s: %s", name, exc)
        try:
            for problem in rt.store.check_server():
                log.warning("%s", problem)
        except CtxpoolError as exc:
            log.error("node %s: state store: %s", name, exc)
        port = rt.settings.node_metrics_port
        if port and self.server is None:
            self.server = serve_health(
                rt.health,
                port,
                "0.0.0.0",  # noqa: S104 - metrics are scraped from other hosts
                EngineCollector(name, rt.engine_state),
                *node_collectors(name, rt.store),
            )

    def shutdown(self, consumer: Any) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
