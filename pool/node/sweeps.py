"""Sweep schedule: every ``sweep_s`` the node queues a sweep of itself on its own queue."""

from __future__ import annotations

from typing import Any

from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime
from pool.queues import SWEEP_TASK, node_queue


class SweepScheduleStep(PeriodicStep):
    """Queues ``tasks.contexts.sweep`` on ``node-<name>``: the sweep runs in a pool process
    (not in the consumer's thread) and expires if the node is too busy to run it in time."""

    label = "ctxpool-sweeps"
    loop = "sweep-schedule"

    def period_s(self, rt: NodeRuntime) -> float:
        return rt.settings.sweep_s

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:
        identity = rt.identity
        assert identity is not None
        consumer.app.send_task(
            SWEEP_TASK,
            kwargs={"node": identity.name},
            queue=node_queue(identity.name),
            expires=max(rt.settings.sweep_s, 5.0),
        )
