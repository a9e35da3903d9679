"""Node membership: each node's heartbeat record (with a TTL) and the index of nodes seen.

A node is *alive* while its record exists; a record that expired means the node stalled, and
its contexts go back to their tag queues (see :mod:`pool.contexts.sweep`).
"""

from __future__ import annotations

import json
import logging
import time

import redis
from pydantic import BaseModel, Field, ValidationError

from pool.admin import AdminStatus, NodeAdmins, effective_status
from pool.keys import Keys
from pool.redisutil import converting

log = logging.getLogger(__name__)

#: Membership records of nodes unseen for this long are dropped from the node index.
NODE_INDEX_RETENTION_S = 86400.0

_converting = converting("state store")


class NodeStats(BaseModel):
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    running_contexts: int = 0
    capacity: int = 0
    gated: bool = False


class NodeAnnotations(BaseModel):
    os: str = ""
    arch: str = ""
    engine: str = ""
    docker_version: str = ""


class Membership(BaseModel):
    """A node's heartbeat record."""

    node: str
    worker_id: str = Field(description="Celery hostname: address for `celery inspect/control`.")
    incarnation: str = Field(description="Random id of this worker start.")
    host: str = ""
    pid: int = 0
    tags: list[str] = Field(default_factory=list)
    queues: list[str] = Field(default_factory=list)
    stats: NodeStats = Field(default_factory=NodeStats)
    annotations: NodeAnnotations = Field(default_factory=NodeAnnotations)
    admin: AdminStatus = Field(
        default_factory=AdminStatus, description="Drain/quarantine state, as the node saw it."
    )
    started_at: float = 0.0
    heartbeat_at: float = 0.0


class NodeView(BaseModel):
    """A node as the CLI lists it: its last record, whether it is alive, and its
    administrative state (the operator's order merged with the node's progress)."""

    name: str
    alive: bool
    last_seen: float
    record: Membership | None = None
    admin: AdminStatus = Field(default_factory=AdminStatus)


class Members:
    """Membership records in Redis. Thread-safe; Redis errors become ``StoreError``."""

    def __init__(self, client: redis.Redis[str], keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    @_converting
    def heartbeat(self, record: Membership, ttl_s: float) -> None:
        """Write the membership record of a node with a TTL."""
        now = time.time()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.node(record.node), record.model_dump_json(), px=int(ttl_s * 1000))
            pipe.zadd(self.keys.nodes, {record.node: now})
            pipe.zremrangebyscore(self.keys.nodes, "-inf", now - NODE_INDEX_RETENTION_S)
            pipe.execute()

    @_converting
    def membership(self, node: str) -> Membership | None:
        raw = self.redis.get(self.keys.node(node))
        return Membership.model_validate_json(raw) if raw else None

    @_converting
    def is_alive(self, node: str) -> bool:
        return bool(self.redis.exists(self.keys.node(node)))

    @_converting
    def alive_nodes(self, names: set[str]) -> set[str]:
        if not names:
            return set()
        ordered = sorted(names)
        with self.redis.pipeline(transaction=False) as pipe:
            for name in ordered:
                pipe.exists(self.keys.node(name))
            flags = pipe.execute()
        return {name for name, flag in zip(ordered, flags, strict=True) if flag}

    @_converting
    def nodes(self) -> list[NodeView]:
        """Every node seen in the last day, alive or stalled, with its administrative state."""
        entries = self.redis.zrange(self.keys.nodes, 0, -1, withscores=True)
        if not entries:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for name, _ in entries:
                pipe.get(self.keys.node(name))
            raws = pipe.execute()
        orders = NodeAdmins(self.redis, self.keys).get_many([name for name, _ in entries])
        views = []
        for (name, seen), raw in zip(entries, raws, strict=True):
            record = None
            if raw:
                try:
                    record = Membership.model_validate(json.loads(raw))
                except (ValidationError, ValueError):
                    log.warning("node %s: unreadable membership record", name)
            admin = effective_status(orders[name], record.admin if record else None)
            views.append(
                NodeView(
                    name=name, alive=raw is not None, last_seen=seen, record=record, admin=admin
                )
            )
        return views
