"""Install the node on a Celery app: its bootsteps (one per job) and signals.

Bootsteps and public signals only; no worker internals are read or patched:

- :class:`~pool.node.identity.NodeIdentityStep` (worker): name, tags, queues, pre-fork;
- :class:`~pool.node.metrics.NodeMetricsStep` (worker): multiprocess metrics, pre-fork (a
  pool child's live gauges are dropped when it exits: ``worker_process_shutdown``);
- :class:`~pool.node.heartbeat.HeartbeatStep`: membership heartbeat;
- :class:`~pool.node.gating.CapacityGateStep`: stop/resume the tag queues at capacity;
- :class:`~pool.node.sweeps.SweepScheduleStep`: queue the node's sweep every ``sweep_s``;
- :class:`~pool.node.drain.DrainStep`: hand contexts to other nodes while drained;
- :class:`~pool.node.gates.LimitGateStep`: one admission gate per configured limit;
- :class:`~pool.node.drpmachine.DrpMachineStep`: the node's tags and member name on its DRP
  machine (``CTXPOOL_DRP_MACHINE``), cleared at shutdown;
- :class:`~pool.node.health.NodeHealthStep`: start-up checks, ``/healthz`` and ``/metrics``;
- :class:`~pool.node.audits.AuditSweepStep`: the audit batch sweep (one node per period);
- :class:`~pool.node.engine_watch.EngineWatchStep`: engine outages logged once, counted, and
  followed by a sweep when the engine is back.
"""

from __future__ import annotations

import os
from typing import Any

from celery import signals

from pool.appconfig import CtxpoolCelery
from pool.node.audits import AuditSweepStep
from pool.node.drain import DrainStep
from pool.node.drpmachine import DrpMachineStep
from pool.node.engine_watch import EngineWatchStep
from pool.node.gates import LimitGateStep
from pool.node.gating import CapacityGateStep
from pool.node.health import NodeHealthStep
from pool.node.heartbeat import HeartbeatStep
from pool.node.identity import NodeIdentityStep
from pool.node.metrics import NodeMetricsStep, pool_process_exited
from pool.node.runtime import node_runtime
from pool.node.sweeps import SweepScheduleStep

CONSUMER_STEPS = (
    NodeHealthStep,
    HeartbeatStep,
    CapacityGateStep,
    SweepScheduleStep,
    DrainStep,
    LimitGateStep,
    EngineWatchStep,
    DrpMachineStep,
    AuditSweepStep,
)


def install(app: CtxpoolCelery) -> None:
    """Register the node bootsteps and signals on ``app`` (built with ``NodeRuntime``)."""
    rt = node_runtime(app)
    app.steps["worker"].add(NodeIdentityStep)
    app.steps["worker"].add(NodeMetricsStep)
    for step in CONSUMER_STEPS:
        app.steps["consumer"].add(step)

    @signals.celeryd_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _command_line(options: dict[str, Any] | None = None, **_: Any) -> None:
        queues = (options or {}).get("queues")
        rt.cli_queues = list(queues) if queues else None

    @signals.worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _after_fork(**_: Any) -> None:
        rt.reset_clients()

    @signals.worker_process_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _child_exits(pid: int | None = None, **_: Any) -> None:
        pool_process_exited(pid or os.getpid())


__all__ = ["install"]
