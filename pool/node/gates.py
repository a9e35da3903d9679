"""Limit gates: one admission thread per configured limit (see :mod:`pool.limits.gate`)."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from pool.limits.gate import LimitGate
from pool.node.runtime import node_runtime

log = logging.getLogger(__name__)


class LimitGateStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts a gate per configured limit in the worker's main process; stops them (held
    messages go back to their queue) when the consumer stops."""

    label = "ctxpool-gates"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.gates: list[LimitGate] = []
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Any) -> None:
        rt = node_runtime(consumer.app)
        if rt.identity is None or self.gates:
            return
        settings = rt.settings
        conf = consumer.app.conf
        for name in settings.limits.names():
            gate = LimitGate(
                name,
                settings.limits.get(name),
                rt.limiter,
                conf.broker_url,
                dict(conf.broker_transport_options or {}),
                rt.identity.name,
                rt.health,
                tags=rt.identity.tags,
            )
            gate.start()
            self.gates.append(gate)
        log.info(
            "node %s: gates for limits %s",
            rt.identity.name,
            "; ".join(f"{g.name}={g.spec.describe()}" for g in self.gates) or "-",
        )

    def stop(self, consumer: Any) -> None:
        for gate in self.gates:
            gate.stop()
        self.gates = []

    shutdown = stop
