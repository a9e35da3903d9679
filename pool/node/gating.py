"""Capacity gating: a full, drained or quarantined node stops taking new contexts from its
tag queues."""

from __future__ import annotations

import logging
from typing import Any

from pool.contexts import placement
from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime
from pool.queues import tag_queue

log = logging.getLogger(__name__)


class CapacityGateStep(PeriodicStep):
    """Cancels the tag-queue consumers at capacity and re-adds them below it, so backlogs wait
    in the broker, not in a node (DESIGN.md invariant 4); likewise while an operator's drain or
    quarantine order stands (:mod:`pool.admin`). Its own ``node-<name>`` queue stays open:
    forwarded nudges and sweeps of contexts it owns always reach it."""

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
        order = rt.store.admin.get(identity.name)
        closed = not placement.intake_open(running, identity.capacity, order)
        if closed == rt.gated:
            return
        for queue in (tag_queue(t) for t in sorted(identity.tags)):
            if closed:
                consumer.cancel_task_queue(queue)
            else:
                consumer.add_task_queue(queue)
        rt.gated = closed
        log.info(
            "node %s %s (%d/%d): %s new contexts",
            identity.name,
            order.mode.value if order else ("at capacity" if closed else "below capacity"),
            running,
            identity.capacity,
            "stopped taking" if closed else "taking",
        )
