"""The node runtime, as Celery bootsteps and signals (no patching of worker internals).

- :class:`NodeIdentityStep` (worker blueprint) fixes the node's name, tags and queues before
  the pool forks: ``tag-<t>`` for its tags (from ``-Q`` and ``CTXPOOL_TAGS``) and
  ``node-<name>``.
- :class:`NodeHeartbeatStep` (consumer blueprint) heartbeats the membership record, gates the
  tag-queue consumers on capacity, and schedules the sweep on the node's own queue.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from typing import Any

from celery import bootsteps, signals

from pool.celery_app import SWEEP_TASK, CtxpoolCelery
from pool.errors import CtxpoolError
from pool.gate import LimitGate
from pool.limited import check_task_limits
from pool.models import Membership, NodeAnnotations, NodeStats
from pool.queues import LIMIT_PREFIX, direct_queue, node_queue, tag_queue, tags_of
from pool.reconcile import NodeIdentity
from pool.runtime import runtime

log = logging.getLogger(__name__)


class NodeIdentityStep(bootsteps.Step):  # type: ignore[misc]
    """Select the node's queues and fix its identity (runs in the main process, pre-fork)."""

    label = "ctxpool-identity"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        app: CtxpoolCelery = worker.app
        settings = app.ctxpool_settings
        queues = app.amqp.queues
        explicit = queues._consume_from is not None  # -Q given on the command line
        extra = [tag_queue(t) for t in settings.tags]
        if extra and not explicit:
            queues.select([])  # CTXPOOL_TAGS alone: serve exactly those tags
        for name in extra:
            queues.select_add(direct_queue(name))
        tags = tags_of(queues.consume_from)
        if not tags:
            log.warning(
                "node %s serves no tag queue: it will only run contexts forwarded to it",
                settings.node_name,
            )
        for name in list(queues.consume_from):
            if name.startswith(LIMIT_PREFIX):
                log.warning("%s is admitted by the node's gate, not consumed directly", name)
                queues.deselect([name])
        queues.select_add(direct_queue(node_queue(settings.node_name)))
        check_task_limits(app)
        identity = NodeIdentity(
            name=settings.node_name, tags=frozenset(tags), capacity=settings.capacity
        )
        runtime(app).identity = identity
        log.info(
            "ctxpool node %s (incarnation %s): tags %s, capacity %d, queues %s",
            identity.name,
            identity.incarnation,
            ",".join(tags) or "-",
            identity.capacity,
            ",".join(sorted(queues.consume_from)),
        )
        super().__init__(worker, **kwargs)


class NodeHeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Membership heartbeat, capacity gating and sweep scheduling (consumer blueprint)."""

    label = "ctxpool-node"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.timers: list[Any] = []
        self.gated = False
        self.started_at = time.time()
        self.docker_version = ""
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Any) -> None:
        rt = runtime(consumer.app)
        settings = rt.settings
        try:
            self.docker_version = rt.engine.version()
        except CtxpoolError as exc:
            self.docker_version = "unreachable"
            log.error("node %s: %s", settings.node_name, exc)
        try:
            for problem in rt.store.check_server():
                log.warning("%s", problem)
        except CtxpoolError as exc:
            log.error("node %s: state store: %s", settings.node_name, exc)
        self.heartbeat(consumer)
        self.gate(consumer)
        self.request_sweep(consumer)
        timer = consumer.timer
        self.timers = [
            timer.call_repeatedly(settings.heartbeat_s, self.heartbeat, (consumer,)),
            timer.call_repeatedly(settings.capacity_check_s, self.gate, (consumer,)),
            timer.call_repeatedly(settings.sweep_s, self.request_sweep, (consumer,)),
        ]

    def stop(self, consumer: Any) -> None:
        for tref in self.timers:
            tref.cancel()
        self.timers = []

    def _tag_queues(self, consumer: Any) -> list[str]:
        identity = runtime(consumer.app).identity
        return [tag_queue(t) for t in sorted(identity.tags)] if identity else []

    def heartbeat(self, consumer: Any) -> None:
        """Write this node's membership record (TTL = membership TTL)."""
        rt = runtime(consumer.app)
        identity = rt.identity
        if identity is None:
            return
        settings = rt.settings
        try:
            running = rt.store.count_owned(identity.name)
            record = Membership(
                node=identity.name,
                worker_id=consumer.hostname,
                incarnation=identity.incarnation,
                host=socket.getfqdn(),
                pid=os.getpid(),
                tags=sorted(identity.tags),
                queues=sorted(consumer.app.amqp.queues.consume_from),
                stats=NodeStats(
                    load_avg=os.getloadavg(),
                    running_contexts=running,
                    capacity=identity.capacity,
                    gated=self.gated,
                ),
                annotations=NodeAnnotations(
                    os=platform.system(),
                    arch=platform.machine(),
                    engine=settings.engine,
                    docker_version=self.docker_version,
                ),
                started_at=self.started_at,
                heartbeat_at=time.time(),
            )
            rt.store.heartbeat(record, settings.membership_ttl_s)
        except CtxpoolError as exc:
            log.warning("node %s: heartbeat failed: %s", identity.name, exc)

    def gate(self, consumer: Any) -> None:
        """Stop consuming tag queues at capacity; resume below it."""
        rt = runtime(consumer.app)
        identity = rt.identity
        if identity is None or consumer.task_consumer is None:
            return
        try:
            running = rt.store.count_owned(identity.name)
        except CtxpoolError as exc:
            log.warning("node %s: capacity check failed: %s", identity.name, exc)
            return
        if running >= identity.capacity and not self.gated:
            for queue in self._tag_queues(consumer):
                consumer.cancel_task_queue(queue)
            self.gated = True
            log.info(
                "node %s at capacity (%d/%d): stopped taking new contexts",
                identity.name,
                running,
                identity.capacity,
            )
        elif running < identity.capacity and self.gated:
            for queue in self._tag_queues(consumer):
                consumer.add_task_queue(queue)
            self.gated = False
            log.info(
                "node %s below capacity (%d/%d): taking new contexts again",
                identity.name,
                running,
                identity.capacity,
            )

    def request_sweep(self, consumer: Any) -> None:
        """Queue a sweep on this node's own queue (it runs in a pool process, not here)."""
        rt = runtime(consumer.app)
        identity = rt.identity
        if identity is None:
            return
        try:
            consumer.app.send_task(
                SWEEP_TASK,
                kwargs={"node": identity.name},
                queue=node_queue(identity.name),
                expires=max(rt.settings.sweep_s, 5.0),
            )
        except Exception as exc:  # broker hiccup: the next period tries again
            log.warning("node %s: could not queue a sweep: %s", identity.name, exc)


class LimitGateStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """One admission gate per configured limit (threads in the main process; see pool.gate)."""

    label = "ctxpool-gates"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.gates: list[LimitGate] = []
        super().__init__(consumer, **kwargs)

    def start(self, consumer: Any) -> None:
        rt = runtime(consumer.app)
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


def install(app: CtxpoolCelery) -> None:
    """Register the node bootsteps and signals on ``app``."""
    app.steps["worker"].add(NodeIdentityStep)
    app.steps["consumer"].add(NodeHeartbeatStep)
    app.steps["consumer"].add(LimitGateStep)

    @signals.worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _after_fork(**_: Any) -> None:
        runtime(app).reset_clients()


__all__ = ["LimitGateStep", "NodeHeartbeatStep", "NodeIdentityStep", "install"]
