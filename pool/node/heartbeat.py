"""Membership heartbeat: the node's record in Redis, renewed every ``heartbeat_s``."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

from pool.admin import effective_status
from pool.membership import Membership, NodeAnnotations, NodeStats
from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime


class HeartbeatStep(PeriodicStep):
    """Writes the node's membership record with a TTL (``membership_ttl_s``). A node whose
    record expired counts as stalled: its contexts go to live nodes of their tag."""

    label = "ctxpool-heartbeat"
    loop = "heartbeat"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.started_at = time.time()
        super().__init__(consumer, **kwargs)

    def period_s(self, rt: NodeRuntime) -> float:
        return rt.settings.heartbeat_s

    def stale_after_s(self, rt: NodeRuntime) -> float:
        return rt.settings.membership_ttl_s

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:
        identity = rt.identity
        assert identity is not None
        settings = rt.settings
        order = rt.store.admin.get(identity.name)
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
                running_contexts=rt.store.ownership.count_owned(identity.name),
                capacity=identity.capacity,
                gated=rt.gated,
            ),
            annotations=NodeAnnotations(
                os=platform.system(),
                arch=platform.machine(),
                engine=settings.engine,
                docker_version=rt.docker_version,
            ),
            admin=effective_status(order, rt.drain_status),
            started_at=self.started_at,
            heartbeat_at=time.time(),
        )
        rt.store.members.heartbeat(record, settings.membership_ttl_s)
