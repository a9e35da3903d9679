"""The node's own metrics: every process's instruments merged, and its contexts by state.

:class:`NodeMetricsStep` (worker blueprint, main process, before the pool forks) turns on
prometheus_client's multiprocess mode in ``Settings.metrics_dir`` (per node, emptied at
start), so that what pool children count (``--pool prefork``) and what the main process counts
(``--pool threads``, the gates) reach the same ``/metrics``. :func:`node_collectors` is what
:class:`~pool.node.health.NodeHealthStep` serves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from celery import bootsteps
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pool.contexts.models import RunState
from pool.contexts.outcomes import Outcome
from pool.contexts.store import StateStore
from pool.errors import CtxpoolError
from pool.instruments import enable_multiprocess, instruments, node_collector, process_exited
from pool.node.runtime import node_runtime

log = logging.getLogger(__name__)


class ContextStateCollector(Collector):
    """``ctxpool_contexts_by_state{node,state}``: the contexts this node owns (parked ones
    included) by state, read from the store at scrape time (two round trips). Absent from a
    scrape when Redis does not answer (the ``heartbeat`` loop reports that)."""

    def __init__(self, node: str, store: StateStore) -> None:
        self.node = node
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.store.node_states(self.node)
        except CtxpoolError as exc:
            log.debug("metrics: contexts by state: %s", exc)
            return
        family = GaugeMetricFamily(
            "ctxpool_contexts_by_state",
            "Contexts this node owns, by state (running, error, failed, pending, removed)",
            labels=["node", "state"],
        )
        for state in RunState:
            family.add_metric([self.node, state.value], counts.get(state, 0))
        yield family


def node_collectors(node: str, store: StateStore) -> list[Collector]:
    """The collectors of the node's own metrics (besides loops and engine)."""
    return [node_collector(), ContextStateCollector(node, store)]


class NodeMetricsStep(bootsteps.Step):  # type: ignore[misc]
    """Turn on multiprocess metrics in ``Settings.metrics_dir`` before the pool forks (worker
    blueprint: steps are built before the pool starts). A directory that cannot be made is
    logged and the node runs on, counting in its main process only."""

    label = "ctxpool-metrics"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        settings = node_runtime(worker.app).settings
        try:
            path = enable_multiprocess(settings.metrics_dir)
        except OSError as exc:
            log.error(
                "node %s: metrics of pool processes not collected: %s", settings.node_name, exc
            )
        else:
            log.info("node %s: per-process metrics in %s", settings.node_name, path)
        instruments().declare_outcomes(o.value for o in Outcome)
        super().__init__(worker, **kwargs)


def pool_process_exited(pid: int) -> None:
    """A pool child ends (``worker_process_shutdown``): its live gauges go, its counts stay."""
    try:
        process_exited(pid)
    except OSError as exc:
        log.warning("metrics of process %d not cleaned up: %s", pid, exc)
