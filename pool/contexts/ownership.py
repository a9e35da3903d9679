"""Ownership of contexts (DESIGN.md invariants 2 and 8): compare-and-set claims capped at a
node's capacity, parking of contexts in a permanent error, and release. Only nodes claim.

``owner:<uuid>`` names the owner; ``owned:<node>`` holds what counts against the node's
capacity, ``parked:<node>`` what it owns without running it. Lua keeps the three in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from pool.keys import Keys
from pool.redisutil import converting, lua

_converting = converting("state store")


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Outcome of an ownership compare-and-set."""

    outcome: str  # "ok" | "full" | "lost"
    owner: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class Ownership:
    """Owners of contexts in Redis. Thread-safe; Redis errors become ``StoreError``."""

    def __init__(self, client: redis.Redis[str], keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._claim = client.register_script(lua("claim"))
        self._disown = client.register_script(lua("disown"))
        self._park = client.register_script(lua("park"))

    @_converting
    def owner(self, uuid: str) -> str | None:
        value: str | None = self.redis.get(self.keys.owner(uuid))
        return value or None

    @_converting
    def claim(self, uuid: str, node: str, expected: str | None, capacity: int = 0) -> ClaimResult:
        """Compare-and-set the owner of ``uuid`` from ``expected`` to ``node``.

        A node already holding ``capacity`` contexts cannot claim another (``full``).
        """
        outcome, owner = self._claim(
            keys=[
                self.keys.owner(uuid),
                self.keys.owned(node),
                self.keys.owned(expected or node),
                self.keys.parked(node),
                self.keys.parked(expected or node),
            ],
            args=[uuid, node, expected or "", capacity],
        )
        return ClaimResult(outcome=str(outcome), owner=str(owner))

    @_converting
    def disown(self, uuid: str, node: str) -> bool:
        """Give up ownership of ``uuid`` if ``node`` holds it."""
        return bool(
            self._disown(
                keys=[self.keys.owner(uuid), self.keys.owned(node), self.keys.parked(node)],
                args=[uuid, node],
            )
        )

    @_converting
    def park(self, uuid: str, node: str) -> bool:
        """Park ``uuid`` on its owner ``node``: still owned, no longer counted against the
        node's capacity (a permanent error). Returns False when ``node`` does not own it."""
        return bool(
            self._park(
                keys=[self.keys.owner(uuid), self.keys.owned(node), self.keys.parked(node)],
                args=[uuid, node],
            )
        )

    @_converting
    def parked_generation(self, uuid: str, node: str) -> int | None:
        """The generation whose permanent error parked ``uuid`` on ``node``; ``None`` when it
        is not parked there."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(self.keys.parked(node), uuid)
            pipe.hget(self.keys.status(uuid), "error_generation")
            parked, generation = pipe.execute()
        if not parked:
            return None
        return int(generation) if generation else -1

    @_converting
    def parked_by(self, node: str) -> set[str]:
        return set(self.redis.smembers(self.keys.parked(node)))

    @_converting
    def owned_by(self, node: str) -> set[str]:
        return set(self.redis.smembers(self.keys.owned(node)))

    @_converting
    def count_owned(self, node: str) -> int:
        return int(self.redis.scard(self.keys.owned(node)))

    @_converting
    def owners(self, uuids: Sequence[str]) -> dict[str, str | None]:
        """The owner of each of ``uuids`` (None: unowned), in one round trip.

        Raises:
            StoreError: Redis is unreachable.
        """
        if not uuids:
            return {}
        values = self.redis.mget([self.keys.owner(u) for u in uuids])
        return {u: v or None for u, v in zip(uuids, values, strict=True)}
