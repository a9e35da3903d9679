"""Queue figures Flower lacks: depth per ``tag-``/``node-``/``limit-`` queue and, on a Redis
broker, the age of its oldest message (every message carries its publish time in the
:data:`~pool.queues.SENT_AT_HEADER` header)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

import redis

from pool.limits.spec import Limits
from pool.membership import NodeView
from pool.queues import SENT_AT_HEADER, audit_queue, limit_queue, node_queue, tag_queue

log = logging.getLogger(__name__)


def watched_queues(
    nodes: Iterable[NodeView], limits: Limits, tags: Iterable[str] = ()
) -> list[str]:
    """The queues worth watching: every tag the nodes (or ``tags``) name (its context queue
    and its audit queue), every live node's own queue, every limit's queue."""
    views = list(nodes)
    all_tags = {t for v in views if v.record for t in v.record.tags} | set(tags)
    return (
        [tag_queue(t) for t in sorted(all_tags)]
        + [audit_queue(t) for t in sorted(all_tags)]
        + [node_queue(v.name) for v in views if v.alive]
        + [limit_queue(name) for name in sorted(limits.specs)]
    )


class OldestAge:
    """Age of the oldest message of a queue on a Redis broker (``None`` elsewhere, or when the
    queue is empty or its oldest message has no publish time)."""

    def __init__(self, broker_url: str) -> None:
        self.redis: redis.Redis[str] | None = None
        if broker_url.startswith(("redis://", "rediss://")):
            self.redis = redis.Redis.from_url(
                broker_url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2
            )

    def __call__(self, queue: str) -> float | None:
        if self.redis is None:
            return None
        try:
            # kombu's Redis transport LPUSHes and BRPOPs: the oldest message is the last
            raw = self.redis.lindex(queue, -1)
        except redis.RedisError as exc:
            log.debug("oldest message of %s unknown: %s", queue, exc)
            return None
        if not raw:
            return None
        try:
            sent = float(json.loads(raw)["headers"][SENT_AT_HEADER])
        except (ValueError, KeyError, TypeError):
            return None
        return max(0.0, time.time() - sent)
