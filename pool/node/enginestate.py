"""A node's view of its container engine: up or not, and how often it stopped answering."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class EngineState:
    """Whether this node's engine answers, and how often it stopped answering."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.up: bool | None = None  # unknown until the first probe
        self.outages = 0
        self.last_error = ""

    def probed(self, error: str | None) -> str | None:
        """Record a probe; returns the transition (``"down"``, ``"back"``) or ``None``."""
        with self._lock:
            was = self.up
            self.up = error is None
            if error is not None:
                self.last_error = error
                if was is not False:
                    self.outages += 1
                    return "down"
            elif was is False:
                return "back"
            return None


class EngineCollector(Collector):
    """``ctxpool_engine_up`` and ``ctxpool_engine_outages_total`` of one node."""

    def __init__(self, node: str, state: EngineState) -> None:
        self.node = node
        self.state = state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ctxpool_engine_up", "1 while the node's container engine answers", labels=["node"]
        )
        up.add_metric([self.node], 1 if self.state.up else 0)
        outages = CounterMetricFamily(
            "ctxpool_engine_outages", "Times the node's container engine stopped answering",
            labels=["node"],
        )  # fmt: skip
        outages.add_metric([self.node], self.state.outages)
        yield up
        yield outages
