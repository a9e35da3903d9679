"""The desired-state store in Redis: desired state, observed status, ownership (leases are in
:mod:`pool.contexts.locks`, membership in :mod:`pool.membership`).

Multi-key updates are Lua scripts (``pool/lua``); every key lives under one prefix
(``pool.keys``). Redis errors become :class:`~pool.errors.StoreError`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from pydantic import ValidationError

from pool.admin import NodeAdmins
from pool.contexts.locks import Locks
from pool.contexts.models import ContextSpec, ContextStatus, Desired, DesiredState, RunState
from pool.contexts.ownership import Ownership
from pool.keys import Keys
from pool.membership import Members
from pool.redisutil import converting, lua, redis_errors

log = logging.getLogger(__name__)


_converting = converting("state store")
_script = lua


@dataclass(frozen=True, slots=True)
class SweepRow:
    """What the pool sweep needs to know of one context (one pipelined read per batch)."""

    uuid: str
    desired: Desired | None  # None: no desired state (expired, or Redis lost it)
    tag: str | None
    updated_at: float
    generation: int
    owner: str | None
    has_status: bool


@dataclass(frozen=True, slots=True)
class DesiredDigest:
    """The gist of one context's desired state: what a producer compares with its own view
    (see :meth:`StateStore.compare_desired`)."""

    uuid: str
    desired: Desired
    generation: int
    tag: str | None
    context: str | None  # of the stored spec (None: absent, or no readable spec)
    image: str | None


class StateStore:
    """Typed access to ctxpool's Redis keys. Thread-safe (redis-py pools connections)."""

    def __init__(self, client: redis.Redis[str], prefix: str = "ctxpool:") -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.members = Members(client, self.keys)
        self.locks = Locks(client, self.keys)
        self.ownership = Ownership(client, self.keys)
        self.admin = NodeAdmins(client, self.keys)
        self._put_desired = client.register_script(_script("put_desired"))
        self._finalize_absent = client.register_script(_script("finalize_absent"))
        self._resync_begin = client.register_script(_script("resync_begin"))
        self._resync_done = client.register_script(_script("resync_done"))
        self._compare_desired = client.register_script(_script("desired_compare"))

    @classmethod
    def from_url(cls, url: str, prefix: str = "ctxpool:") -> StateStore:
        """Connect to the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``)."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry_on_timeout=True,
        )
        return cls(client, prefix)

    # ---- desired state -------------------------------------------------------------------

    @_converting
    def put_desired(
        self,
        uuid: str,
        desired: Desired,
        spec: ContextSpec | None = None,
        generation: int | None = None,
        preferred: str | None = None,
    ) -> tuple[int, bool]:
        """Write a context's desired state.

        Args:
            uuid: the context (machine) id.
            desired: present or absent.
            spec: required when present.
            generation: an ordered writer's own generation; a write not newer than the stored
                one is ignored as stale. ``None`` bumps the stored generation on change.
            preferred: the node a producer would like to run it (a placement hint, kept
                beside the spec; it changes no generation).

        Returns:
            ``(generation, changed)``: the generation now stored, and whether this write
            changed the desired state.
        """
        if desired is Desired.PRESENT and spec is None:
            raise ValueError("a present context needs a spec")
        result = self._put_desired(
            keys=[self.keys.ctx(uuid), self.keys.contexts],
            args=[
                uuid,
                desired.value,
                spec.to_store() if spec else "",
                spec.spec_hash() if spec else "",
                spec.tag if spec else "",
                "" if generation is None else str(generation),
                repr(time.time()),
                preferred or "",
            ],
        )
        return int(result[0]), bool(int(result[1]))

    @_converting
    def put_desired_many(
        self, items: Sequence[tuple[ContextSpec, str | None]]
    ) -> list[tuple[int, bool]]:
        """:meth:`put_desired` (present, store-counted generations) for many contexts, in one
        round trip. Each write is atomic on its own; together they are not.

        Args:
            items: ``(spec, preferred node or None)``.

        Returns:
            ``(generation, changed)`` of each, in order.

        Raises:
            StoreError: Redis is unreachable; some writes may have happened.
        """
        now = repr(time.time())
        with self.redis.pipeline(transaction=False) as pipe:
            for spec, preferred in items:
                self._put_desired(
                    keys=[self.keys.ctx(spec.uuid), self.keys.contexts],
                    args=[spec.uuid, Desired.PRESENT.value, spec.to_store(), spec.spec_hash(),
                          spec.tag, "", now, preferred or ""],
                    client=pipe,
                )  # fmt: skip
            results = pipe.execute()
        return [(int(r[0]), bool(int(r[1]))) for r in results]

    @_converting
    def get_desired(self, uuid: str) -> DesiredState | None:
        """The desired state of ``uuid``, or ``None`` when the store has no record."""
        return self._parse_desired(uuid, self.redis.hgetall(self.keys.ctx(uuid)))

    @staticmethod
    def _parse_desired(uuid: str, raw: dict[str, str]) -> DesiredState | None:
        if not raw or "desired" not in raw:
            return None
        spec = None
        if raw.get("desired") == Desired.PRESENT and raw.get("spec"):
            try:
                spec = ContextSpec.model_validate_json(raw["spec"])
            except ValidationError as exc:
                log.error("context %s: stored spec is invalid, treating as absent: %s", uuid, exc)
                return DesiredState(
                    uuid=uuid, desired=Desired.ABSENT, generation=int(raw.get("generation", 0))
                )
        return DesiredState(
            uuid=uuid,
            desired=Desired(raw["desired"]),
            generation=int(raw.get("generation", 0)),
            spec=spec,
            updated_at=float(raw.get("updated_at", 0.0)),
            preferred=raw.get("preferred") or None,
        )

    def iter_context_ids(self, batch: int = 500) -> Iterator[str]:
        """Every context id in the index (one ZSCAN round trip per ``batch``).

        Raises:
            StoreError: Redis failed (converted inside the generator, on each page).
        """
        cursor = 0
        while True:
            with redis_errors("state store"):
                cursor, items = self.redis.zscan(self.keys.contexts, cursor, count=batch)
            for uuid, _score in items:
                yield uuid
            if cursor == 0:
                return

    @_converting
    def sweep_rows(self, uuids: list[str]) -> list[SweepRow]:
        """Desired state, owner and whether a status exists, for many contexts in one round
        trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for uuid in uuids:
                pipe.hmget(self.keys.ctx(uuid), "desired", "tag", "updated_at", "generation")
                pipe.get(self.keys.owner(uuid))
                pipe.exists(self.keys.status(uuid))
            raw = pipe.execute()
        rows = []
        for i, uuid in enumerate(uuids):
            (desired, tag, updated_at, generation), owner, has_status = raw[3 * i : 3 * i + 3]
            rows.append(
                SweepRow(
                    uuid=uuid,
                    desired=Desired(desired) if desired else None,
                    tag=tag or None,
                    updated_at=float(updated_at or 0.0),
                    generation=int(generation or 0),
                    owner=owner or None,
                    has_status=bool(has_status),
                )
            )
        return rows

    @_converting
    def context_ids(self) -> set[str]:
        """Every context id in the index (tombstones included): one snapshot, one reply.

        Raises:
            StoreError: Redis is unreachable.
        """
        return set(self.redis.zrange(self.keys.contexts, 0, -1))

    #: Contexts per call of :meth:`compare_desired` (one Lua call each; bounds its run time).
    COMPARE_BATCH = 500

    @_converting
    def compare_desired(
        self, expected: Sequence[tuple[str, tuple[str, str, str] | None]]
    ) -> dict[str, DesiredDigest | None]:
        """Compare many contexts with what a producer expects, in one round trip (and one
        reply, empty when nothing differs) per :attr:`COMPARE_BATCH`.

        Args:
            expected: ``(uuid, (context, image, tag))`` for a context wanted present with
                that spec, ``(uuid, None)`` for one wanted absent.

        Returns:
            ``uuid -> DesiredDigest`` (``None``: no record) for each context whose stored
            desired state differs from the expectation. The others are as expected.

        Raises:
            StoreError: Redis is unreachable.
        """
        out: dict[str, DesiredDigest | None] = {}
        ctx = self.keys.ctx
        for start in range(0, len(expected), self.COMPARE_BATCH):
            chunk = expected[start : start + self.COMPARE_BATCH]
            want = orjson.dumps([w or False for _, w in chunk]).decode()
            reply = self._compare_desired(keys=[ctx(u) for u, _ in chunk], args=[want])
            for index, (desired, generation, context, image, tag) in orjson.loads(reply).items():
                uuid = chunk[int(index) - 1][0]
                if desired not in (Desired.PRESENT, Desired.ABSENT):
                    out[uuid] = None
                    continue
                out[uuid] = DesiredDigest(
                    uuid=uuid,
                    desired=Desired(desired),
                    generation=int(generation or 0),
                    tag=tag or None,
                    context=context or None,
                    image=image or None,
                )
        return out

    @_converting
    def forget_index_entry(self, uuid: str) -> None:
        """Drop an index entry whose records have expired."""
        if not self.redis.exists(self.keys.ctx(uuid), self.keys.status(uuid)):
            self.redis.zrem(self.keys.contexts, uuid)

    @_converting
    def begin_resync(self) -> tuple[str, bool]:
        """Start a resync.

        Returns:
            ``(epoch, fresh)``: the store's epoch, to pass to :meth:`resync_completed`, and
            whether it was just created (the store was empty: first start, or Redis lost its
            data; nodes need a heartbeat period to register again).
        """
        epoch, fresh = self._resync_begin(keys=[self.keys.epoch], args=[secrets.token_hex(8)])
        return str(epoch), bool(int(fresh))

    @_converting
    def resync_completed(self, epoch: str) -> bool:
        """Record that a resync begun in ``epoch`` wrote every context DRP wants.

        Returns:
            False (nothing recorded) when the store lost its data since the resync began.
        """
        return bool(
            self._resync_done(
                keys=[self.keys.epoch, self.keys.resync_done], args=[epoch, repr(time.time())]
            )
        )

    @_converting
    def last_resync(self) -> float | None:
        """When the last complete resync of the current epoch finished (unix s); ``None``
        when none has since Redis last lost its data."""
        raw = self.redis.get(self.keys.resync_done)
        return float(raw) if raw else None

    # ---- observed state ------------------------------------------------------------------

    @_converting
    def set_status(self, uuid: str, **fields: Any) -> str | None:
        """Record observed state (``state``, ``applied_generation``, ``last_error`` ...).

        Returns:
            The ``last_error`` recorded before this write (``None`` when there was none), so
            that a caller can tell a new or cleared error from a repeated one.
        """
        mapping: dict[str | bytes, str] = {
            k: ("" if v is None else str(v)) for k, v in fields.items()
        }
        mapping["updated_at"] = repr(time.time())
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.status(uuid), "last_error")
            pipe.hset(self.keys.status(uuid), mapping=mapping)
            pipe.persist(self.keys.status(uuid))
            previous = pipe.execute()[0]
        return previous or None

    @_converting
    def status(self, uuid: str) -> ContextStatus:
        """Desired plus observed state of one context."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.ctx(uuid))
            pipe.hgetall(self.keys.status(uuid))
            pipe.get(self.keys.owner(uuid))
            raw_ctx, raw_status, owner = pipe.execute()
        status = self._build_status(uuid, raw_ctx, raw_status, owner)
        status.owner_alive = bool(owner) and self.members.is_alive(owner)
        return status

    @_converting
    def statuses(self, uuids: list[str]) -> list[ContextStatus]:
        """Status of many contexts in one round trip per 500."""
        out: list[ContextStatus] = []
        for start in range(0, len(uuids), 500):
            chunk = uuids[start : start + 500]
            with self.redis.pipeline(transaction=False) as pipe:
                for uuid in chunk:
                    pipe.hgetall(self.keys.ctx(uuid))
                    pipe.hgetall(self.keys.status(uuid))
                    pipe.get(self.keys.owner(uuid))
                raw = pipe.execute()
            owners = {raw[i * 3 + 2] for i in range(len(chunk)) if raw[i * 3 + 2]}
            alive = self.members.alive_nodes(owners)
            for i, uuid in enumerate(chunk):
                status = self._build_status(uuid, raw[i * 3], raw[i * 3 + 1], raw[i * 3 + 2])
                status.owner_alive = status.owner in alive
                out.append(status)
        return out

    @_converting
    def node_states(self, node: str) -> dict[RunState, int]:
        """How many of the contexts ``node`` owns (parked ones included) are in each state, in
        two round trips: for the node's ``/metrics``.

        Returns:
            A count for every :class:`RunState` (0 when none); a context without a recorded
            state counts as pending.

        Raises:
            StoreError: Redis is unreachable.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.owned(node))
            pipe.smembers(self.keys.parked(node))
            owned, parked = pipe.execute()
        uuids = sorted(set(owned) | set(parked))
        counts = dict.fromkeys(RunState, 0)
        for start in range(0, len(uuids), 500):
            with self.redis.pipeline(transaction=False) as pipe:
                for uuid in uuids[start : start + 500]:
                    pipe.hget(self.keys.status(uuid), "state")
                for raw in pipe.execute():
                    try:
                        counts[RunState(raw or RunState.PENDING.value)] += 1
                    except ValueError:
                        log.warning("context state %r is not a known state", raw)
        return counts

    def _build_status(
        self, uuid: str, raw_ctx: dict[str, str], raw_status: dict[str, str], owner: str | None
    ) -> ContextStatus:
        def num(raw: dict[str, str], key: str) -> int | None:
            value = raw.get(key)
            return int(value) if value else None

        state = raw_status.get("state") or RunState.PENDING.value
        return ContextStatus(
            uuid=uuid,
            desired=Desired(raw_ctx["desired"]) if raw_ctx.get("desired") else None,
            generation=num(raw_ctx, "generation"),
            tag=raw_ctx.get("tag") or None,
            owner=owner,
            state=RunState(state),
            applied_generation=num(raw_status, "applied_generation"),
            container_id=raw_status.get("container_id") or None,
            last_error=raw_status.get("last_error") or None,
            error_generation=num(raw_status, "error_generation"),
            updated_at=float(raw_status["updated_at"]) if raw_status.get("updated_at") else None,
        )

    # ---- ownership -----------------------------------------------------------------------

    @_converting
    def orphan_since(self, uuid: str) -> float | None:
        """When a container without desired state was first seen (``None``: not an orphan)."""
        raw = self.redis.hget(self.keys.status(uuid), "orphan_since")
        return float(raw) if raw else None

    @_converting
    def forget_status(self, uuid: str) -> None:
        self.redis.delete(self.keys.status(uuid))

    @_converting
    def finalize_absent(self, uuid: str, node: str, generation: int, ttl_s: int) -> bool:
        """Record that ``node`` removed the container of absent ``uuid`` at ``generation``.

        Returns:
            False when the desired state moved on meanwhile (the caller must reconcile again).
        """
        return bool(
            self._finalize_absent(
                keys=[
                    self.keys.ctx(uuid),
                    self.keys.status(uuid),
                    self.keys.owner(uuid),
                    self.keys.owned(node),
                    self.keys.parked(node),
                ],
                args=[uuid, node, generation, ttl_s, repr(time.time())],
            )
        )

    @_converting
    def ping(self) -> None:
        """Raises: StoreError when Redis cannot be reached."""
        self.redis.ping()

    @_converting
    def check_server(self) -> list[str]:
        """Problems with the Redis server's configuration (empty when fine)."""
        problems: list[str] = []
        try:
            policy = self.redis.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.ResponseError:  # CONFIG disabled (managed Redis): cannot tell
            return problems
        if policy and policy != "noeviction":
            problems.append(
                f"Redis maxmemory-policy is {policy!r}; use 'noeviction' or queued messages and "
                "state can be evicted silently"
            )
        return problems
