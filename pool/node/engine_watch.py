"""Engine watch: an engine that is down is an expected condition, not a stream of tracebacks.

The node probes its Docker engine every ``capacity_check_s`` (at least 1 s, at most 5 s). A
transition is logged once (down: a warning without traceback; back: info), outages are
counted (``ctxpool_engine_outages_total``) and shown (``ctxpool_engine_up``, and ``/healthz``
turns 503 after three failed probes). When the engine is back the node sweeps itself at once:
whatever changed meanwhile (contexts created, removed, containers lost) converges without
waiting for the next sweep period.
"""

from __future__ import annotations

import logging
from typing import Any

from pool.errors import EngineError
from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime, node_runtime
from pool.queues import SWEEP_TASK, node_queue

log = logging.getLogger(__name__)


class EngineWatchStep(PeriodicStep):
    """Probes the engine; logs transitions once; sweeps the node when the engine is back."""

    label = "ctxpool-engine-watch"
    loop = "engine"

    def period_s(self, rt: NodeRuntime) -> float:
        return min(max(rt.settings.capacity_check_s, 1.0), 5.0)

    def run(self, consumer: Any) -> None:
        rt = node_runtime(consumer.app)
        identity = rt.identity
        assert identity is not None
        try:
            rt.engine.version()
        except EngineError as exc:
            rt.health.failed(self.loop, exc)
            if rt.engine_state.probed(str(exc)) == "down":
                log.warning(
                    "node %s: container engine unreachable (%s); contexts wait, and the node "
                    "sweeps itself when the engine is back",
                    identity.name,
                    exc,
                )
            return
        except Exception as exc:  # a bug: supervised like every loop
            rt.health.failed(self.loop, exc)
            log.error("node %s: engine probe failed unexpectedly", identity.name, exc_info=True)
            return
        rt.health.ok(self.loop)
        if rt.engine_state.probed(None) == "back":
            log.info("node %s: container engine is back; sweeping now", identity.name)
            consumer.app.send_task(
                SWEEP_TASK,
                kwargs={"node": identity.name},
                queue=node_queue(identity.name),
                expires=max(rt.settings.sweep_s, 5.0),
            )

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:  # pragma: no cover - run() above
        raise AssertionError("EngineWatchStep overrides run()")
