"""A read-only view of every configured limit (``ctxpool limits`` and ``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from pool.limits.limiter import BucketState, Limiter
from pool.limits.spec import Limits
from pool.queues import limit_queue

#: Gate reports older than this are ignored (a stopped node holds nothing).
WAITING_FRESH_S = 10.0
#: Buckets listed per limit (most recently used first).
MAX_BUCKETS_SHOWN = 50


class BucketView(BaseModel):
    key: str
    tokens: float
    in_flight: int
    blocked_s: float


class LimitView(BaseModel):
    name: str
    definition: str
    rate_per_s: float
    burst: int
    concurrency: int | None
    queued: int | None  # messages waiting in limit-<name> (None: broker could not tell)
    held: int  # messages the nodes' gates hold, waiting for a token
    held_by_node: dict[str, int]
    counters: dict[str, int]
    buckets: list[BucketView]

    @property
    def waiters(self) -> int:
        return self.held + (self.queued or 0)


def _bucket(state: BucketState) -> BucketView:
    return BucketView(
        key=state.key,
        tokens=round(state.tokens, 3),
        in_flight=state.in_flight,
        blocked_s=round(state.blocked_s, 3),
    )


def limit_views(
    limits: Limits, limiter: Limiter, queue_depth: Callable[[str], int | None]
) -> list[LimitView]:
    """One :class:`LimitView` per configured limit.

    Raises:
        StoreError: Redis failed.
    """
    views = []
    for name in limits.names():
        spec = limits.get(name)
        keys = limiter.bucket_keys(name)[:MAX_BUCKETS_SHOWN] or ["*"]
        held = limiter.waiting(name, WAITING_FRESH_S)
        views.append(
            LimitView(
                name=name,
                definition=spec.describe(),
                rate_per_s=spec.per_s,
                burst=spec.burst,
                concurrency=spec.concurrency,
                queued=queue_depth(limit_queue(name)),
                held=sum(held.values()),
                held_by_node=held,
                counters=limiter.counters(name),
                buckets=[_bucket(limiter.bucket(name, key, spec)) for key in keys],
            )
        )
    return views
