"""Every Redis key ctxpool writes, in one place. All share ``Settings.key_prefix``.

Owners and lifetimes:
    ctx:<uuid>         hash, desired state. Written by the API/bridge; absent ones expire
                       (tombstone TTL) once a node has removed the container.
    status:<uuid>      hash, observed state (owner, applied generation, error). Same lifetime.
    owner:<uuid>       string, owning node. Set by CAS in a node; deleted when the context goes.
    lock:<uuid>        string, lease lock (PX TTL).
    dirty:<uuid>       string, "nudged while locked" flag; TTL = lock TTL.
    contexts           zset uuid -> last desired-state change (index for sweeps and the CLI).
    node:<name>        string JSON, membership record; TTL = membership TTL.
    nodes              zset name -> last heartbeat (listing stalled nodes; pruned after a day).
    owned:<name>       set of uuids the node owns; maintained with owner:<uuid> in Lua.
    sweep-lease        string, lease of the pool-wide sweep (one node per period).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder bound to one prefix."""

    prefix: str = "ctxpool:"

    def ctx(self, uuid: str) -> str:
        return f"{self.prefix}ctx:{uuid}"

    def status(self, uuid: str) -> str:
        return f"{self.prefix}status:{uuid}"

    def owner(self, uuid: str) -> str:
        return f"{self.prefix}owner:{uuid}"

    def lock(self, uuid: str) -> str:
        return f"{self.prefix}lock:{uuid}"

    def dirty(self, uuid: str) -> str:
        return f"{self.prefix}dirty:{uuid}"

    @property
    def contexts(self) -> str:
        return f"{self.prefix}contexts"

    def node(self, name: str) -> str:
        return f"{self.prefix}node:{name}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def owned(self, name: str) -> str:
        return f"{self.prefix}owned:{name}"

    @property
    def sweep_lease(self) -> str:
        return f"{self.prefix}sweep-lease"
