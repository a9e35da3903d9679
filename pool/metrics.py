"""Prometheus metrics of the whole pool, read from Redis and the broker at scrape time.

``ctxpool metrics --port 9808`` serves them (one exporter per pool is enough: every figure is
pool-wide). Names:

- ``ctxpool_limit_tokens{limit,key}``, ``ctxpool_limit_in_flight{limit,key}``,
  ``ctxpool_limit_blocked_seconds{limit,key}``: buckets (recently used keys, at most 50);
- ``ctxpool_limit_waiting{limit,where="queue|gate"}``: calls waiting for a token;
- ``ctxpool_limit_rate_per_second{limit}``, ``ctxpool_limit_burst{limit}``,
  ``ctxpool_limit_concurrency{limit}``: the configuration;
- ``ctxpool_limit_<counter>_total{limit}``: granted, throttled (had to wait), deferred
  (429/5xx), stale (admitted but started late, re-queued), failed (gave up);
- ``ctxpool_node_up{node}``, ``ctxpool_node_contexts{node}``, ``ctxpool_node_capacity{node}``,
  ``ctxpool_node_gated{node}``;
- ``ctxpool_node_admin_state{node,state}``: 1 for the node's state (active, draining, drained,
  quarantined), 0 for the others; ``ctxpool_node_drain_remaining{node}``: contexts a draining
  node still owns;
- ``ctxpool_queue_depth{queue}`` and (Redis broker) ``ctxpool_queue_oldest_age_seconds{queue}``
  of every ``tag-``/``node-``/``limit-`` queue: what Flower's metrics lack;
- ``ctxpool_audit_items{check,state}``: items of the audit batches still kept (retention), by
  check and state (pending, running, pass, fail, error, timeout);
  ``ctxpool_audit_batches{check,state="running|complete"}``: those batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pool.admin import AdminState
from pool.audits.models import STATES
from pool.audits.records import AuditRecords
from pool.contexts.store import StateStore
from pool.errors import CtxpoolError
from pool.limits.limiter import COUNTERS, Limiter
from pool.limits.spec import Limits
from pool.limits.view import limit_views
from pool.queuestats import watched_queues

log = logging.getLogger(__name__)

#: Newest audit batches the exporter reads per scrape (one pipelined round trip).
AUDIT_BATCHES_READ = 200


class PoolCollector(Collector):
    """Collects limit and node metrics on every scrape."""

    def __init__(
        self,
        limits: Limits,
        limiter: Limiter,
        store: StateStore,
        queue_depth: Callable[[str], int | None],
        oldest: Callable[[str], float | None] | None = None,
    ) -> None:
        self.limits, self.limiter, self.store, self.queue_depth = (
            limits,
            limiter,
            store,
            queue_depth,
        )
        self.oldest = oldest

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ctxpool_exporter_redis_up", "1 when Redis answered this scrape")
        try:
            views = limit_views(self.limits, self.limiter, self.queue_depth)
            nodes = self.store.members.nodes()
        except CtxpoolError as exc:
            log.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        g = {
            name: GaugeMetricFamily(f"ctxpool_limit_{name}", text, labels=labels)
            for name, text, labels in (
                ("tokens", "Tokens available now", ["limit", "key"]),
                ("in_flight", "Concurrency slots held", ["limit", "key"]),
                ("blocked_seconds", "Seconds until the next token", ["limit", "key"]),
                ("waiting", "Calls waiting for a token", ["limit", "where"]),
                ("rate_per_second", "Configured rate", ["limit"]),
                ("burst", "Configured burst", ["limit"]),
                ("concurrency", "Configured concurrency (0: none)", ["limit"]),
            )
        }
        counters = {
            c: CounterMetricFamily(f"ctxpool_limit_{c}", f"Calls {c}", labels=["limit"])
            for c in COUNTERS
        }
        for v in views:
            for b in v.buckets:
                g["tokens"].add_metric([v.name, b.key], b.tokens)
                g["in_flight"].add_metric([v.name, b.key], b.in_flight)
                g["blocked_seconds"].add_metric([v.name, b.key], b.blocked_s)
            g["waiting"].add_metric([v.name, "queue"], v.queued or 0)
            g["waiting"].add_metric([v.name, "gate"], v.held)
            g["rate_per_second"].add_metric([v.name], v.rate_per_s)
            g["burst"].add_metric([v.name], v.burst)
            g["concurrency"].add_metric([v.name], v.concurrency or 0)
            for c in COUNTERS:
                counters[c].add_metric([v.name], v.counters.get(c, 0))
        yield from g.values()
        yield from counters.values()
        node_g = {
            name: GaugeMetricFamily(f"ctxpool_node_{name}", text, labels=["node"])
            for name, text in (
                ("up", "1 while the node heartbeats"),
                ("contexts", "Contexts the node runs"),
                ("capacity", "Contexts the node may run"),
                ("gated", "1 when the node stopped taking new contexts"),
            )
        }
        for n in nodes:
            node_g["up"].add_metric([n.name], 1 if n.alive else 0)
            if n.record is not None:
                node_g["contexts"].add_metric([n.name], n.record.stats.running_contexts)
                node_g["capacity"].add_metric([n.name], n.record.stats.capacity)
                node_g["gated"].add_metric([n.name], 1 if n.record.stats.gated else 0)
        yield from node_g.values()
        admin = GaugeMetricFamily(
            "ctxpool_node_admin_state",
            "1 for the node's administrative state (drain/quarantine), 0 for the others",
            labels=["node", "state"],
        )
        remaining = GaugeMetricFamily(
            "ctxpool_node_drain_remaining",
            "Contexts a draining node still owns",
            labels=["node"],
        )
        for n in nodes:
            for state in AdminState:
                admin.add_metric([n.name, state.value], 1 if n.admin.state is state else 0)
            if n.admin.state is AdminState.DRAINING:
                remaining.add_metric([n.name], n.admin.remaining)
        yield admin
        yield remaining
        depth = GaugeMetricFamily(
            "ctxpool_queue_depth", "Messages waiting in the queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "ctxpool_queue_oldest_age_seconds",
            "Age of the queue's oldest message (Redis broker; absent when empty or unknown)",
            labels=["queue"],
        )
        for queue in watched_queues(nodes, self.limits):
            waiting = self.queue_depth(queue)
            if waiting is not None:
                depth.add_metric([queue], waiting)
            oldest = self.oldest(queue) if self.oldest is not None and waiting else None
            if oldest is not None:
                age.add_metric([queue], oldest)
        yield depth
        yield age
        yield from self._audits()

    def _audits(self) -> Iterator[Metric]:
        items = GaugeMetricFamily(
            "ctxpool_audit_items",
            "Items of kept audit batches, by check and state",
            labels=["check", "state"],
        )
        batches = GaugeMetricFamily(
            "ctxpool_audit_batches", "Kept audit batches, by check and state",
            labels=["check", "state"],
        )  # fmt: skip
        try:
            infos = AuditRecords(self.store.redis, self.store.keys).recent(AUDIT_BATCHES_READ)
        except CtxpoolError as exc:
            log.warning("metrics: audits: %s", exc)
            infos = []
        by_item: dict[tuple[str, str], int] = {}
        by_batch: dict[tuple[str, str], int] = {}
        for info in infos:
            for state in STATES:
                key = (info.check, state)
                by_item[key] = by_item.get(key, 0) + info.counts.get(state, 0)
            bkey = (info.check, "complete" if info.complete else "running")
            by_batch[bkey] = by_batch.get(bkey, 0) + 1
        for (check, item_state), n in sorted(by_item.items()):
            items.add_metric([check, item_state], n)
        for (check, batch_state), n in sorted(by_batch.items()):
            batches.add_metric([check, batch_state], n)
        yield items
        yield batches
