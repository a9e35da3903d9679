"""The distributed limiter: a GCRA token bucket plus a concurrency semaphore of leased slots.

One narrow interface (:class:`Limiter`) with two backends that pass the same tests:
:class:`RedisLimiter` (atomic Lua on the server clock; what nodes use) and
:class:`MemoryLimiter` (one process, injectable clock; for unit tests).

GCRA keeps one number per bucket, the *theoretical arrival time* (TAT). A call is allowed when
``TAT - now <= (burst - 1) * interval``; it then moves TAT on by one interval. So a bucket
allows ``burst`` calls at once after a pause and one per interval after that, never more, and an
idle bucket costs nothing. A token and a slot are taken together or not at all, so a call that
waits for a slot does not burn a token.

Slots are leases (``holder -> expiry``): a holder that dies without releasing loses its slot
when the lease expires (``slot_ttl_s``); a live holder renews it while its call runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from pool.keys import Keys
from pool.limits.spec import LimitSpec
from pool.redisutil import converting, lua

#: Counters kept per limit.
COUNTERS = ("granted", "throttled", "deferred", "stale", "failed")
#: How many bucket keys a limit lists (most recently used first); older ones are trimmed.
MAX_LISTED_KEYS = 1000


@dataclass(frozen=True, slots=True)
class Grant:
    """Answer to one acquire: granted now, or how long until it could be."""

    granted: bool
    wait_s: float = 0.0
    reason: str = "ok"  # "ok" | "rate" | "concurrency"


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket as it is now (read-only view for the CLI and metrics)."""

    key: str
    tokens: float
    in_flight: int
    blocked_s: float


def bucket_state(key: str, spec: LimitSpec, ahead_s: float, in_flight: int) -> BucketState:
    """Tokens available now, from how far the bucket's TAT is ahead of now."""
    tau = spec.interval_s * (spec.burst - 1)
    if ahead_s > tau:
        return BucketState(key, 0.0, in_flight, ahead_s - tau)
    tokens = min(float(spec.burst), (tau - ahead_s) / spec.interval_s + 1.0)
    return BucketState(key, tokens, in_flight, 0.0)


class Limiter(Protocol):
    """The operations the gates, tasks, CLI and metrics need; nothing more."""

    def acquire(self, limit: str, key: str, spec: LimitSpec, holder: str) -> Grant:
        """Take a token (and a slot when the limit has ``concurrency``) for ``holder``."""
        ...

    def renew(self, limit: str, key: str, spec: LimitSpec, holder: str) -> bool:
        """Extend ``holder``'s slot lease; False when it was lost (expired)."""
        ...

    def release(self, limit: str, key: str, holder: str) -> None:
        """Give ``holder``'s slot back (no-op without one)."""
        ...

    def penalize(self, limit: str, key: str, spec: LimitSpec, delay_s: float) -> None:
        """Grant no token for this bucket before ``delay_s`` from now (``Retry-After``)."""
        ...

    def bucket(self, limit: str, key: str, spec: LimitSpec) -> BucketState:
        """Read one bucket."""
        ...

    def bucket_keys(self, limit: str) -> list[str]:
        """Bucket keys of ``limit`` that granted recently, newest first."""
        ...

    def count(self, limit: str, counter: str, n: int = 1) -> None:
        """Add ``n`` to one of :data:`COUNTERS`."""
        ...

    def counters(self, limit: str) -> dict[str, int]:
        """Every counter of ``limit`` (missing ones are 0)."""
        ...

    def report_waiting(self, limit: str, node: str, held: int) -> None:
        """Record how many messages ``node``'s gate holds waiting for ``limit``."""
        ...

    def waiting(self, limit: str, fresh_s: float) -> dict[str, int]:
        """Messages held per node, from reports newer than ``fresh_s``."""
        ...


_converting = converting("limiter")
_script = lua


class RedisLimiter:
    """:class:`Limiter` on Redis: atomic Lua scripts on the server's clock.

    Raises :class:`~pool.errors.StoreError` when Redis fails.
    """

    def __init__(self, client: redis.Redis[str], prefix: str = "ctxpool:") -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._acquire = client.register_script(_script("limit_acquire"))
        self._renew = client.register_script(_script("limit_renew"))
        self._penalize = client.register_script(_script("limit_penalize"))
        self._state = client.register_script(_script("limit_state"))
        self._grants_since_trim = 0

    @classmethod
    def from_url(cls, url: str, prefix: str = "ctxpool:") -> RedisLimiter:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5
        )
        return cls(client, prefix)

    @_converting
    def acquire(self, limit: str, key: str, spec: LimitSpec, holder: str) -> Grant:
        ok, wait_ms, reason = self._acquire(
            keys=[
                self.keys.limit_tat(limit, key),
                self.keys.limit_slots(limit, key),
                self.keys.limit_keys(limit),
            ],
            args=[
                spec.interval_s * 1000.0,
                spec.burst,
                spec.concurrency or 0,
                holder,
                spec.slot_ttl_s * 1000.0,
                key,
            ],
        )
        if int(ok):
            self._grants_since_trim += 1
            if self._grants_since_trim >= 1000:
                self._grants_since_trim = 0
                self.redis.zremrangebyrank(self.keys.limit_keys(limit), 0, -MAX_LISTED_KEYS - 1)
            return Grant(True)
        return Grant(False, max(0.0, float(wait_ms) / 1000.0), str(reason))

    @_converting
    def renew(self, limit: str, key: str, spec: LimitSpec, holder: str) -> bool:
        slots = self.keys.limit_slots(limit, key)
        return bool(self._renew(keys=[slots], args=[holder, spec.slot_ttl_s * 1000.0]))

    @_converting
    def release(self, limit: str, key: str, holder: str) -> None:
        self.redis.zrem(self.keys.limit_slots(limit, key), holder)

    @_converting
    def penalize(self, limit: str, key: str, spec: LimitSpec, delay_s: float) -> None:
        self._penalize(
            keys=[self.keys.limit_tat(limit, key)],
            args=[max(0.0, delay_s) * 1000.0, spec.interval_s * 1000.0, spec.burst],
        )

    @_converting
    def bucket(self, limit: str, key: str, spec: LimitSpec) -> BucketState:
        ahead_ms, used = self._state(
            keys=[self.keys.limit_tat(limit, key), self.keys.limit_slots(limit, key)]
        )
        return bucket_state(key, spec, float(ahead_ms) / 1000.0, int(used))

    @_converting
    def bucket_keys(self, limit: str) -> list[str]:
        return list(self.redis.zrevrange(self.keys.limit_keys(limit), 0, MAX_LISTED_KEYS - 1))

    @_converting
    def count(self, limit: str, counter: str, n: int = 1) -> None:
        self.redis.hincrby(self.keys.limit_stats(limit), counter, n)

    @_converting
    def counters(self, limit: str) -> dict[str, int]:
        raw = self.redis.hgetall(self.keys.limit_stats(limit))
        return {name: int(raw.get(name, 0)) for name in COUNTERS}

    @_converting
    def report_waiting(self, limit: str, node: str, held: int) -> None:
        self.redis.hset(self.keys.limit_waiting(limit), node, f"{held} {int(time.time() * 1000)}")

    @_converting
    def waiting(self, limit: str, fresh_s: float) -> dict[str, int]:
        return _fresh_waiting(self.redis.hgetall(self.keys.limit_waiting(limit)), fresh_s)


def _fresh_waiting(raw: dict[str, str], fresh_s: float) -> dict[str, int]:
    cutoff_ms = (time.time() - fresh_s) * 1000
    out = {}
    for node, value in raw.items():
        held, _, at_ms = value.partition(" ")
        if held.isdigit() and at_ms.isdigit() and int(at_ms) >= cutoff_ms:
            out[node] = int(held)
    return out


@dataclass(slots=True)
class _Bucket:
    tat: float = 0.0
    slots: dict[str, float] | None = None
    last_grant: float = 0.0


class MemoryLimiter:
    """:class:`Limiter` in one process, on an injectable clock (seconds). For unit tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._counters: dict[str, dict[str, int]] = {}
        self._waiting: dict[str, dict[str, str]] = {}

    def _bucket(self, limit: str, key: str) -> _Bucket:
        return self._buckets.setdefault((limit, key), _Bucket(slots={}))

    def _live_slots(self, bucket: _Bucket, now: float) -> dict[str, float]:
        assert bucket.slots is not None
        for holder in [h for h, exp in bucket.slots.items() if exp < now]:
            del bucket.slots[holder]
        return bucket.slots

    def acquire(self, limit: str, key: str, spec: LimitSpec, holder: str) -> Grant:
        with self._lock:
            now = self.clock()
            bucket = self._bucket(limit, key)
            slots = self._live_slots(bucket, now)
            if spec.concurrency and holder not in slots and len(slots) >= spec.concurrency:
                return Grant(False, max(0.0, min(slots.values()) - now), "concurrency")
            tat = max(bucket.tat, now)
            tau = spec.interval_s * (spec.burst - 1)
            if tat - now > tau + 1e-9:
                return Grant(False, tat - now - tau, "rate")
            bucket.tat = tat + spec.interval_s
            bucket.last_grant = now
            if spec.concurrency:
                slots[holder] = now + spec.slot_ttl_s
            return Grant(True)

    def renew(self, limit: str, key: str, spec: LimitSpec, holder: str) -> bool:
        with self._lock:
            now = self.clock()
            slots = self._live_slots(self._bucket(limit, key), now)
            if holder not in slots:
                return False
            slots[holder] = now + spec.slot_ttl_s
            return True

    def release(self, limit: str, key: str, holder: str) -> None:
        with self._lock:
            slots = self._bucket(limit, key).slots
            assert slots is not None
            slots.pop(holder, None)

    def penalize(self, limit: str, key: str, spec: LimitSpec, delay_s: float) -> None:
        with self._lock:
            now = self.clock()
            bucket = self._bucket(limit, key)
            tau = spec.interval_s * (spec.burst - 1)
            bucket.tat = max(bucket.tat, now + max(0.0, delay_s) + tau)

    def bucket(self, limit: str, key: str, spec: LimitSpec) -> BucketState:
        with self._lock:
            now = self.clock()
            bucket = self._bucket(limit, key)
            used = len(self._live_slots(bucket, now))
            return bucket_state(key, spec, max(0.0, bucket.tat - now), used)

    def bucket_keys(self, limit: str) -> list[str]:
        with self._lock:
            mine = [(b.last_grant, k) for (n, k), b in self._buckets.items() if n == limit]
        return [k for t, k in sorted(mine, reverse=True) if t > 0][:MAX_LISTED_KEYS]

    def count(self, limit: str, counter: str, n: int = 1) -> None:
        with self._lock:
            per = self._counters.setdefault(limit, {})
            per[counter] = per.get(counter, 0) + n

    def counters(self, limit: str) -> dict[str, int]:
        with self._lock:
            per = self._counters.get(limit, {})
            return {name: per.get(name, 0) for name in COUNTERS}

    def report_waiting(self, limit: str, node: str, held: int) -> None:
        with self._lock:
            self._waiting.setdefault(limit, {})[node] = f"{held} {int(time.time() * 1000)}"

    def waiting(self, limit: str, fresh_s: float) -> dict[str, int]:
        with self._lock:
            raw = dict(self._waiting.get(limit, {}))
        return _fresh_waiting(raw, fresh_s)
