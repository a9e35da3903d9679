"""Audit batch records in Redis (DESIGN.md invariant 10: records, not chords).

A batch is a hash of its meta and counts plus per-item hashes (see :mod:`pool.keys`). Items
move only through Lua scripts, so each transition and its counts are one atomic step:

- ``audit_create``: the record, once (a second create of the same id is a no-op);
- ``audit_start``: pending -> running, or a takeover of a stale run (its worker died);
- ``audit_finish``: running/pending -> pass|fail|error|timeout, written once; the batch is
  complete when ``done == total``;
- ``audit_release``: running -> pending (a limited call was deferred).

Redis errors become :class:`~pool.errors.StoreError`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from pool.audits.models import (
    FINAL_STATES,
    STATES,
    BatchInfo,
    BatchReport,
    ItemRow,
    StoredResult,
)
from pool.keys import Keys
from pool.redisutil import converting, lua

log = logging.getLogger(__name__)

_converting = converting("audit records")

#: Meta fields stored as JSON (the others are strings or numbers).
_JSON_FIELDS = ("params",)
_PARTS = ("state", "running", "run", "results", "targets")


@dataclass(frozen=True, slots=True)
class StuckItems:
    """Items of one batch the sweep should send again."""

    info: BatchInfo
    running: list[int]  # running for longer than the item timeout plus grace
    pending: list[int]  # pending while the batch made no progress for a while


class AuditRecords:
    """Typed access to audit batch records. Thread-safe (redis-py pools connections)."""

    def __init__(self, client: redis.Redis[str], keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._create = client.register_script(lua("audit_create"))
        self._start = client.register_script(lua("audit_start"))
        self._finish = client.register_script(lua("audit_finish"))
        self._release = client.register_script(lua("audit_release"))

    def _item_keys(self, batch: str, *parts: str) -> list[str]:
        return [self.keys.audit(batch), *(self.keys.audit_part(batch, p) for p in parts)]

    # ---- writes ----------------------------------------------------------------------------

    @_converting
    def create(
        self, info: BatchInfo, targets: list[str], retention_s: int, now: float | None = None
    ) -> bool:
        """Write a batch's record in one atomic step; ``False`` when it existed (idempotent).

        Raises:
            StoreError: Redis failed.
        """
        at = time.time() if now is None else now
        meta: dict[str, Any] = {
            "check": info.check,
            "version": info.version,
            "params": orjson.dumps(info.params).decode(),
            "tag": info.tag,
            "label": info.label,
            "writeback": "1" if info.writeback else "0",
            "timeout_s": repr(float(info.timeout_s)),
            "limit": info.limit or "",
        }
        pairs = [str(x) for kv in meta.items() for x in kv]
        created = self._create(
            keys=[self.keys.audit(info.batch), self.keys.audit_part(info.batch, "targets"),
                  self.keys.audits],
            args=[info.batch, repr(at), int(retention_s), len(meta), *pairs, *targets],
        )  # fmt: skip
        return bool(int(created))

    @_converting
    def start(self, batch: str, index: int, token: str, stale_after_s: float) -> str:
        """Move an item to running: ``run``, ``final``, ``busy`` or ``gone`` (see the script).

        Raises:
            StoreError: Redis failed.
        """
        keys = self._item_keys(batch, "state", "running", "run")
        return str(self._start(keys=keys, args=[index, token, repr(time.time()), stale_after_s]))

    @_converting
    def finish(self, batch: str, index: int, result: StoredResult, retention_s: int) -> int:
        """Record an item's final state, once: 0 no-op, 1 recorded, 2 recorded and complete.

        Raises:
            StoreError: Redis failed.
        """
        keys = self._item_keys(batch, "state", "running", "run", "results", "targets")
        args = [index, result.result, result.model_dump_json(), repr(time.time()), retention_s]
        return int(self._finish(keys=keys, args=args))

    @_converting
    def release(self, batch: str, index: int, token: str) -> bool:
        """Put a running item back to pending (only if ``token``'s run holds it)."""
        keys = self._item_keys(batch, "state", "running", "run")
        return bool(int(self._release(keys=keys, args=[index, token])))

    @_converting
    def mark_resent(self, batch: str, count: int) -> None:
        """Note that the sweep sent ``count`` items of ``batch`` again (now)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.audit(batch), "resent", count)
        pipe.hset(self.keys.audit(batch), "enqueued_at", repr(time.time()))
        pipe.execute()

    # ---- reads -----------------------------------------------------------------------------

    @staticmethod
    def _info(batch: str, raw: dict[str, str]) -> BatchInfo:
        def num(name: str, default: float = 0.0) -> float:
            value = raw.get(name)
            return float(value) if value not in (None, "") else default

        return BatchInfo(
            batch=batch,
            check=raw.get("check", "?"),
            version=raw.get("version", "1"),
            params=orjson.loads(raw.get("params") or "{}"),
            tag=raw.get("tag", "default"),
            label=raw.get("label", ""),
            writeback=raw.get("writeback") == "1",
            timeout_s=num("timeout_s", 30.0),
            limit=raw.get("limit") or None,
            total=int(num("total")),
            counts={s: int(num(s)) for s in STATES},
            done=int(num("done")),
            attempts=int(num("attempts")),
            resent=int(num("resent")),
            created_at=num("created_at"),
            started_at=num("started_at") or None,
            progress_at=num("progress_at"),
            enqueued_at=num("enqueued_at"),
            finished_at=num("finished_at") or None,
        )

    @_converting
    def info(self, batch: str) -> BatchInfo | None:
        """A batch's record, ``None`` when there is none (unknown, expired or lost)."""
        raw = self.redis.hgetall(self.keys.audit(batch))
        return self._info(batch, raw) if raw else None

    @_converting
    def infos(self, batches: list[str]) -> list[BatchInfo]:
        """Records of ``batches`` (one pipelined round trip); expired ones are left out."""
        pipe = self.redis.pipeline(transaction=False)
        for b in batches:
            pipe.hgetall(self.keys.audit(b))
        return [self._info(b, raw) for b, raw in zip(batches, pipe.execute(), strict=True) if raw]

    @_converting
    def recent(self, limit: int = 20) -> list[BatchInfo]:
        """The newest ``limit`` batches that still have a record, newest first."""
        names = self.redis.zrevrange(self.keys.audits, 0, max(0, limit - 1))
        return self.infos(list(names))

    @_converting
    def unfinished(self, max_batches: int = 1000) -> list[BatchInfo]:
        """Batches with a record that are not complete (oldest first)."""
        names = self.redis.zrange(self.keys.audits, 0, max_batches - 1)
        return [i for i in self.infos(list(names)) if not i.complete]

    @_converting
    def trim_index(self, retention_s: int, now: float | None = None) -> int:
        """Drop index entries older than the retention or whose record is gone."""
        at = time.time() if now is None else now
        dropped = int(self.redis.zremrangebyscore(self.keys.audits, "-inf", at - retention_s))
        names = list(self.redis.zrange(self.keys.audits, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for b in names:
            pipe.exists(self.keys.audit(b))
        gone = [b for b, ok in zip(names, pipe.execute(), strict=True) if not ok]
        if gone:
            dropped += int(self.redis.zrem(self.keys.audits, *gone))
        return dropped

    @_converting
    def report(self, batch: str) -> BatchReport | None:
        """Every row of a batch (one pipelined round trip), ``None`` for no such batch."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.audit(batch))
        for part in ("targets", "state", "results"):
            pipe.hgetall(self.keys.audit_part(batch, part))
        raw, targets, states, results = pipe.execute()
        if not raw:
            return None
        rows = []
        for idx_s, target in sorted(targets.items(), key=lambda kv: int(kv[0])):
            state = states.get(idx_s, "pending")
            row = ItemRow(index=int(idx_s), target=target, state=state)
            if state in FINAL_STATES and idx_s in results:
                stored = StoredResult.model_validate_json(results[idx_s])
                row = row.model_copy(
                    update={"summary": stored.summary, "detail": stored.detail,
                            "node": stored.node, "duration_s": stored.duration_s,
                            "at": stored.at}
                )  # fmt: skip
            rows.append(row)
        return BatchReport(batch=self._info(batch, raw), rows=rows)

    @_converting
    def stuck(
        self, info: BatchInfo, grace_s: float, pending_after_s: float, now: float | None = None
    ) -> StuckItems:
        """Items of ``info``'s batch to send again: running past their timeout plus grace
        (their worker died, or the message was lost with the broker), and pending items when
        the batch made no progress for ``pending_after_s`` (their messages were lost)."""
        at = time.time() if now is None else now
        running = [
            int(i)
            for i in self.redis.zrangebyscore(
                self.keys.audit_part(info.batch, "running"), "-inf", at - info.timeout_s - grace_s
            )
        ]
        pending: list[int] = []
        quiet_since = max(info.progress_at, info.enqueued_at)
        if info.counts.get("pending", 0) > 0 and at - quiet_since >= pending_after_s:
            started = {int(i) for i in self.redis.hkeys(self.keys.audit_part(info.batch, "state"))}
            pending = [i for i in range(info.total) if i not in started]
        return StuckItems(info=info, running=running, pending=pending)

    @_converting
    def targets(self, batch: str, indexes: list[int]) -> list[str]:
        """The targets of some items of ``batch`` (in order; ``""`` for unknown indexes)."""
        if not indexes:
            return []
        values = self.redis.hmget(self.keys.audit_part(batch, "targets"), [str(i) for i in indexes])
        return [v or "" for v in values]

    @_converting
    def lease(self, key: str, token: str, ttl_s: float) -> bool:
        """A plain ``SET NX PX`` lease (the audit sweep's, one node per period)."""
        return bool(self.redis.set(key, token, nx=True, px=int(ttl_s * 1000)))


def parts() -> tuple[str, ...]:
    """The per-item key parts of a batch (for tests and cleanup)."""
    return _PARTS
