"""The desired-state store in Redis: desired state, observed status, ownership, lease locks.

Multi-key updates are Lua scripts (``pool/lua``); every key lives under one prefix
(``pool.keys``). Redis errors become :class:`~pool.errors.StoreError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from pydantic import ValidationError

from pool.contexts.models import ContextSpec, ContextStatus, Desired, DesiredState, RunState
from pool.keys import Keys
from pool.membership import Members
from pool.redisutil import converting, lua

log = logging.getLogger(__name__)


_converting = converting("state store")
_script = lua


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


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Outcome of an ownership compare-and-set."""

    outcome: str  # "ok" | "full" | "lost"
    owner: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class StateStore:
    """Typed access to ctxpool's Redis keys. Thread-safe (redis-py pools connections)."""

    def __init__(self, client: redis.Redis[str], prefix: str = "ctxpool:") -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.members = Members(client, self.keys)
        self._put_desired = client.register_script(_script("put_desired"))
        self._claim = client.register_script(_script("claim"))
        self._disown = client.register_script(_script("disown"))
        self._finalize_absent = client.register_script(_script("finalize_absent"))
        self._lock_acquire = client.register_script(_script("lock_acquire"))
        self._lock_release = client.register_script(_script("lock_release"))
        self._lock_steal = client.register_script(_script("lock_steal"))
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
    def owners(self, uuids: Sequence[str]) -> dict[str, str | None]:
        """The owner of each of ``uuids`` (None: unowned), in one round trip.

        Raises:
            StoreError: Redis is unreachable.
        """
        if not uuids:
            return {}
        values = self.redis.mget([self.keys.owner(u) for u in uuids])
        return {u: v or None for u, v in zip(uuids, values, strict=True)}

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

    @_converting
    def iter_context_ids(self, batch: int = 500) -> Iterator[str]:
        """Every context id in the index, oldest change first."""
        for uuid, _score in self.redis.zscan_iter(self.keys.contexts, count=batch):
            yield uuid

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
    def resync_completed(self, started_at: float) -> None:
        """Record that a resync which started at ``started_at`` (unix s) wrote every context
        DRP wants: desired state older than that start is complete (never moves back)."""
        self._resync_done(keys=[self.keys.resync_done], args=[repr(started_at)])

    @_converting
    def last_resync(self) -> float | None:
        """Start time of the last complete resync, ``None`` when none completed since Redis
        last lost its data."""
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
    def mark_dirty(self, uuid: str, ttl_s: float) -> None:
        """Ask the current lease holder to run once more before it lets go."""
        self.redis.set(self.keys.dirty(uuid), "1", px=int(ttl_s * 1000))

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
            ],
            args=[uuid, node, expected or "", capacity],
        )
        return ClaimResult(outcome=str(outcome), owner=str(owner))

    @_converting
    def disown(self, uuid: str, node: str) -> bool:
        """Give up ownership of ``uuid`` if ``node`` holds it."""
        return bool(
            self._disown(keys=[self.keys.owner(uuid), self.keys.owned(node)], args=[uuid, node])
        )

    @_converting
    def owned_by(self, node: str) -> set[str]:
        return set(self.redis.smembers(self.keys.owned(node)))

    @_converting
    def count_owned(self, node: str) -> int:
        return int(self.redis.scard(self.keys.owned(node)))

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
                ],
                args=[uuid, node, generation, ttl_s, repr(time.time())],
            )
        )

    # ---- lease locks ---------------------------------------------------------------------

    @_converting
    def lock_acquire(self, uuid: str, token: str, ttl_s: float) -> tuple[bool, str]:
        """Try to take the lease of ``uuid``. On failure the context is marked dirty.

        Returns:
            ``(acquired, holder_token)``.
        """
        ok, holder = self._lock_acquire(
            keys=[self.keys.lock(uuid), self.keys.dirty(uuid)], args=[token, int(ttl_s * 1000)]
        )
        return bool(int(ok)), str(holder)

    @_converting
    def lock_release(self, uuid: str, token: str) -> int:
        """Release the lease: 1 released, 2 released but dirty (run again), 0 not held."""
        return int(
            self._lock_release(keys=[self.keys.lock(uuid), self.keys.dirty(uuid)], args=[token])
        )

    @_converting
    def lock_steal(self, uuid: str, holder: str, token: str, ttl_s: float) -> bool:
        """Replace a dead holder's lease with ours (CAS on the holder token)."""
        return bool(
            self._lock_steal(keys=[self.keys.lock(uuid)], args=[holder, token, int(ttl_s * 1000)])
        )

    @_converting
    def lease(self, key: str, token: str, ttl_s: float) -> bool:
        """A plain ``SET NX PX`` lease on a full key name (e.g. the sweep lease)."""
        return bool(self.redis.set(key, token, nx=True, px=int(ttl_s * 1000)))

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
