"""Per-context lease locks (DESIGN.md invariant 3) and plain leases, in Redis.

A lease is ``SET NX PX`` with a token ``node|incarnation|pid|nonce``; a nudge that finds the
lease taken marks the context *dirty*, and the holder runs once more before it lets go, so no
change is lost. Leases are renewed while work runs (:mod:`pool.contexts.lease`).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from pool.keys import Keys
from pool.redisutil import converting, lua

_converting = converting("state store")


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a lease: parsed from the lock token ``node|incarnation|pid|nonce``."""

    node: str
    incarnation: str
    pid: int | None
    token: str

    @classmethod
    def parse(cls, token: str) -> LockHolder:
        parts = token.split("|")
        pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        return cls(
            node=parts[0], incarnation=parts[1] if len(parts) > 1 else "", pid=pid, token=token
        )


class Locks:
    """Lease locks of contexts. Thread-safe; Redis errors become ``StoreError``."""

    def __init__(self, client: redis.Redis[str], keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._acquire = client.register_script(lua("lock_acquire"))
        self._release = client.register_script(lua("lock_release"))
        self._steal = client.register_script(lua("lock_steal"))
        self._renew = client.register_script(lua("lock_renew"))

    @_converting
    def acquire(self, uuid: str, token: str, ttl_s: float) -> tuple[bool, str]:
        """Try to take the lease of ``uuid``. On failure the context is marked dirty.

        Returns:
            ``(acquired, holder_token)``.
        """
        ok, holder = self._acquire(
            keys=[self.keys.lock(uuid), self.keys.dirty(uuid)], args=[token, int(ttl_s * 1000)]
        )
        return bool(int(ok)), str(holder)

    @_converting
    def release(self, uuid: str, token: str) -> int:
        """Release the lease: 1 released, 2 released but dirty (run again), 0 not held."""
        return int(self._release(keys=[self.keys.lock(uuid), self.keys.dirty(uuid)], args=[token]))

    @_converting
    def steal(self, uuid: str, holder: str, token: str, ttl_s: float) -> bool:
        """Replace a dead holder's lease with ours (CAS on the holder token)."""
        return bool(
            self._steal(keys=[self.keys.lock(uuid)], args=[holder, token, int(ttl_s * 1000)])
        )

    @_converting
    def renew(self, leases: list[tuple[str, str]], ttl_s: float) -> list[bool]:
        """Extend many leases ``(uuid, token)`` by ``ttl_s`` in one round trip.

        Returns:
            For each lease, whether it was still held (False: expired or taken over).
        """
        with self.redis.pipeline(transaction=False) as pipe:
            for uuid, token in leases:
                self._renew(
                    keys=[self.keys.lock(uuid)], args=[token, int(ttl_s * 1000)], client=pipe
                )
            return [bool(int(r)) for r in pipe.execute()]

    @_converting
    def lease(self, key: str, token: str, ttl_s: float) -> bool:
        """A plain ``SET NX PX`` lease on a full key name (e.g. the sweep lease)."""
        return bool(self.redis.set(key, token, nx=True, px=int(ttl_s * 1000)))

    @_converting
    def mark_dirty(self, uuid: str, ttl_s: float) -> None:
        """Ask the current lease holder to run once more before it lets go."""
        self.redis.set(self.keys.dirty(uuid), "1", px=int(ttl_s * 1000))
