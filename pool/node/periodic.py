"""Base of the node's timer-driven bootsteps: one job each, supervised (DESIGN.md inv. 9)."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from pool.errors import ConfigError, CtxpoolError
from pool.node.runtime import NodeRuntime, node_runtime

log = logging.getLogger(__name__)


class PeriodicStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs :meth:`tick` at start and every :meth:`period_s` on the consumer's timer.

    A tick that raises is logged (expected store/engine trouble as a warning and a
    configuration problem as an error, both without a traceback; anything else with one),
    counted as a restart in the node's health and tried again next period: the period is the
    backoff. The loop is unhealthy when no tick succeeded for
    :meth:`stale_after_s`.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)
    #: The loop's name in ``/healthz`` and metrics.
    loop = "periodic"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.tref: Any = None
        super().__init__(consumer, **kwargs)

    def period_s(self, rt: NodeRuntime) -> float:
        raise NotImplementedError

    def stale_after_s(self, rt: NodeRuntime) -> float:
        return max(3 * self.period_s(rt), 5.0)

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:
        raise NotImplementedError

    def start(self, consumer: Any) -> None:
        rt = node_runtime(consumer.app)
        if rt.identity is None:
            return
        rt.health.register(self.loop, self.stale_after_s(rt))
        self.run(consumer)
        self.tref = consumer.timer.call_repeatedly(self.period_s(rt), self.run, (consumer,))

    def run(self, consumer: Any) -> None:
        """One supervised tick; never raises."""
        rt = node_runtime(consumer.app)
        try:
            self.tick(consumer, rt)
        except ConfigError as exc:  # the operator must fix it: an error, but no traceback
            rt.health.failed(self.loop, exc)
            log.error("node %s: %s failed: %s", rt.settings.node_name, self.loop, exc)
        except CtxpoolError as exc:
            rt.health.failed(self.loop, exc)
            log.warning("node %s: %s failed: %s", rt.settings.node_name, self.loop, exc)
        except Exception as exc:
            rt.health.failed(self.loop, exc)
            log.error(
                "node %s: %s failed unexpectedly (next try in %.1fs)",
                rt.settings.node_name,
                self.loop,
                self.period_s(rt),
                exc_info=True,
            )
        else:
            rt.health.ok(self.loop)

    def stop(self, consumer: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop
