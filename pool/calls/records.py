"""Results of integration calls, kept in Redis under ``call:<task id>`` for a TTL."""

from __future__ import annotations

import redis

from pool.keys import Keys
from pool.redisutil import converting

_converting = converting("call records")


class CallRecords:
    """Typed access to call records; Redis errors become ``StoreError``."""

    def __init__(self, client: redis.Redis[str], keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    @_converting
    def put(self, task_id: str, record_json: str, ttl_s: int) -> None:
        """Record the result of one integration call (JSON) for ``ttl_s`` seconds."""
        self.redis.set(self.keys.call(task_id), record_json, ex=ttl_s)

    @_converting
    def get(self, task_id: str) -> str | None:
        """The recorded result of one integration call, or ``None`` (unknown or expired)."""
        return self.redis.get(self.keys.call(task_id))
