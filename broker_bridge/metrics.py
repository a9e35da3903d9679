"""The bridge's Prometheus metrics: its counters, as ``ctxpool_bridge_<counter>_total``.

Counters: ``events`` (frames read), ``irrelevant`` (dropped early: changes that cannot matter),
``malformed`` (bad JSON, shapes, types; each key is also logged once), ``unrelated`` (other
object types), ``applied``/``removed`` (desired-state writes), ``resyncs``, ``reconnects``,
``errors`` (writes or DRP calls that failed; the next resync retries), ``cluster_events``.
Gauges: ``ctxpool_bridge_pending`` (events waiting in the coalescing window),
``ctxpool_bridge_machines`` (machines the bridge knows). The loops' health (restarts, age of
the last success, e.g. of the last successful resync) comes from
:class:`pool.health.HealthCollector` on the same page (``ctxpool_loop_*``).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker_bridge.bridge import Bridge

COUNTERS = (
    "events",
    "irrelevant",
    "malformed",
    "unrelated",
    "applied",
    "removed",
    "resyncs",
    "reconnects",
    "errors",
    "cluster_events",
)


class BridgeCollector(Collector):
    """Reads a :class:`Bridge`'s counters at scrape time."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        stats = dict(self.bridge.stats)
        for name in COUNTERS:
            family = CounterMetricFamily(f"ctxpool_bridge_{name}", f"Bridge: {name}")
            family.add_metric([], stats.get(name, 0))
            yield family
        pending = GaugeMetricFamily("ctxpool_bridge_pending", "Events in the coalescing window")
        pending.add_metric([], len(self.bridge.pending) + len(self.bridge.cluster_pending))
        yield pending
        machines = GaugeMetricFamily("ctxpool_bridge_machines", "Machines the bridge knows")
        machines.add_metric([], len(self.bridge.machines))
        yield machines
