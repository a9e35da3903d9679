"""Capacity gating: a full node stops taking new contexts from its tag queues."""

from __future__ import annotations

import logging
from typing import Any

from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime
from pool.queues import tag_queue

log = logging.getLogger(__name__)


class CapacityGateStep(PeriodicStep):
    """Cancels the tag-queue consumers at capacity and re-adds them below it, so backlogs wait
    in the broker, not in a node (DESIGN.md invariant 4). Its own ``node-<name>`` queue stays
    open: forwarded nudges and sweeps of contexts it owns always reach it."""

    label = "ctxpool-capacity"
    loop = "capacity"

    def period_s(self, rt: NodeRuntime) -> float:
        return rt.settings.capacity_check_s

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:
        identity = rt.identity
        assert identity is not None
        if consumer.task_consumer is None:
            return  # not connected yet: the next tick gates
        running = rt.store.ownership.count_owned(identity.name)
        full = running >= identity.capacity
        if full == rt.gated:
            return
        for queue in (tag_queue(t) for t in sorted(identity.tags)):
            if full:
                consumer.cancel_task_queue(queue)
            else:
                consumer.add_task_queue(queue)
        rt.gated = full
        log.info(
            "node %s %s capacity (%d/%d): %s new contexts",
            identity.name,
            "at" if full else "below",
            running,
            identity.capacity,
            "stopped taking" if full else "taking",
        )
