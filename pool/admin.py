"""Administrative state of a node: drained or quarantined by an operator.

An operator (``ctxpool drain|quarantine|undrain``) writes the *order* (:class:`NodeAdmin`)
under ``admin:<node>``: no TTL for a drain, the ``--for`` duration for a quarantine. The node
reads it (so it survives the node's restart), closes its intake, and for a drain hands its
contexts to other nodes. It reports its *state* (:class:`AdminStatus`: active, draining,
drained, quarantined, with progress) in its membership record, where placement and the CLI
read it. :func:`effective_status` merges the two: the order is the truth about the mode (the
record may be one heartbeat old), the record about progress.
"""

from __future__ import annotations

import getpass
import re
import socket
import time
from enum import StrEnum

import redis
from pydantic import BaseModel, Field, ValidationError

from pool.keys import Keys
from pool.redisutil import converting

_converting = converting("state store")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class AdminMode(StrEnum):
    """What an operator ordered."""

    DRAINING = "draining"
    QUARANTINED = "quarantined"


class AdminState(StrEnum):
    """What a node is, as it reports it."""

    ACTIVE = "active"
    DRAINING = "draining"
    DRAINED = "drained"
    QUARANTINED = "quarantined"


class NodeAdmin(BaseModel):
    """An operator's order for one node, as stored under ``admin:<node>``."""

    mode: AdminMode
    why: str = Field("", max_length=500, description="The operator's reason.")
    since: float = Field(description="Unix time the order was given.")
    until: float | None = Field(None, description="Unix time a quarantine lifts (None: never).")
    by: str = Field("", description="user@host that gave the order.")


class AdminStatus(BaseModel):
    """A node's administrative state with its progress (in its membership record)."""

    state: AdminState = AdminState.ACTIVE
    why: str = ""
    until: float | None = None
    detail: str = Field("", description="Progress: what a draining node waits for.")
    remaining: int = Field(0, ge=0, description="Contexts a draining node still owns.")

    @property
    def takes_new_work(self) -> bool:
        return self.state is AdminState.ACTIVE


def effective_status(order: NodeAdmin | None, reported: AdminStatus | None) -> AdminStatus:
    """The state to show and act on: the mode from the operator's ``order``, the progress
    from the node's last ``reported`` status (which may predate the order)."""
    if order is None:
        return AdminStatus()
    if order.mode is AdminMode.QUARANTINED:
        return AdminStatus(state=AdminState.QUARANTINED, why=order.why, until=order.until)
    if reported is not None and reported.state in (AdminState.DRAINING, AdminState.DRAINED):
        return AdminStatus(
            state=reported.state,
            why=order.why,
            detail=reported.detail,
            remaining=reported.remaining,
        )
    return AdminStatus(state=AdminState.DRAINING, why=order.why, detail="not yet seen by the node")


def parse_duration_s(text: str) -> float:
    """Parse ``"90"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` (also ``"1.5h"``) to seconds.

    Raises:
        ValueError: not a positive duration in that form.
    """
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"duration {text!r} must look like 90s, 30m, 2h or 1d")
    seconds = float(match[1]) * _UNIT_S[match[2].lower()]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``; ``42`` -> ``"42s"``."""
    secs = max(0, round(seconds))
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return "".join(shown[:2]) or "0s"


def describe(status: AdminStatus, now: float) -> str:
    """One line for ``ctxpool nodes``: ``draining (3 left: waiting: no other node of tag ci;
    why)``, ``quarantined (until 2025-01-01 14:00Z, in 1h59m; why)``, ``active``."""
    notes: list[str] = []
    if status.state is AdminState.DRAINING:
        progress = f"{status.remaining} left"
        notes.append(f"{progress}: {status.detail}" if status.detail else progress)
    if status.state is AdminState.QUARANTINED:
        if status.until is None:
            notes.append("until lifted")
        else:
            stamp = time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(status.until))
            notes.append(f"until {stamp}, in {format_duration(status.until - now)}")
    if status.why and status.state is not AdminState.ACTIVE:
        notes.append(status.why)
    return f"{status.state.value} ({'; '.join(notes)})" if notes else status.state.value


def operator() -> str:
    """``user@host`` of whoever runs the CLI, recorded with an order."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


class NodeAdmins:
    """Operators' orders in Redis (``admin:<node>``). Thread-safe; Redis errors become
    ``StoreError``. Written by the CLI, read by the node and the views."""

    def __init__(self, client: redis.Redis[str], keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    @_converting
    def get(self, node: str) -> NodeAdmin | None:
        """The order for ``node``; ``None`` when it is active. An unreadable order reads as a
        quarantine (the safe side: the node keeps what it runs and takes nothing new)."""
        return _parse(self.redis.get(self.keys.node_admin(node)))

    @_converting
    def get_many(self, nodes: list[str]) -> dict[str, NodeAdmin | None]:
        """The orders for ``nodes`` in one round trip."""
        if not nodes:
            return {}
        raws = self.redis.mget([self.keys.node_admin(n) for n in nodes])
        return {n: _parse(raw) for n, raw in zip(nodes, raws, strict=True)}

    @_converting
    def drain(self, node: str, why: str = "", now: float | None = None) -> NodeAdmin | None:
        """Order ``node`` to drain (until :meth:`lift`). Returns the order it replaced."""
        order = NodeAdmin(mode=AdminMode.DRAINING, why=why, since=now or time.time(), by=operator())
        return self._put(node, order, None)

    @_converting
    def quarantine(
        self, node: str, why: str, for_s: float | None = None, now: float | None = None
    ) -> NodeAdmin | None:
        """Quarantine ``node`` (for ``for_s`` seconds, else until :meth:`lift`). Returns the
        order it replaced."""
        now = now or time.time()
        order = NodeAdmin(
            mode=AdminMode.QUARANTINED,
            why=why,
            since=now,
            until=None if for_s is None else now + for_s,
            by=operator(),
        )
        return self._put(node, order, for_s)

    @_converting
    def lift(self, node: str) -> NodeAdmin | None:
        """Make ``node`` active again. Returns the order it lifted (``None``: none)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.node_admin(node))
            pipe.delete(self.keys.node_admin(node))
            raw = pipe.execute()[0]
        return _parse(raw)

    def _put(self, node: str, order: NodeAdmin, ttl_s: float | None) -> NodeAdmin | None:
        key = self.keys.node_admin(node)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            if ttl_s is None:
                pipe.set(key, order.model_dump_json())
            else:
                pipe.set(key, order.model_dump_json(), px=max(1, int(ttl_s * 1000)))
            raw = pipe.execute()[0]
        return _parse(raw)


def _parse(raw: str | None) -> NodeAdmin | None:
    if not raw:
        return None
    try:
        return NodeAdmin.model_validate_json(raw)
    except ValidationError:
        return NodeAdmin(mode=AdminMode.QUARANTINED, why="unreadable admin order", since=0.0)
