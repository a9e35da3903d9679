"""Writes: machines' desired state into the store, compared in batches, written per machine.

A batch (the machines whose coalescing window closed, or one listed page) is compared with
the store in one round trip (:meth:`Sink.compare`); only machines whose stored state differs
are written, in one sink call per batch after their machine tokens were fetched concurrently
(at most ``drp_calls`` DRP calls at once, so a first resync of 10,000 machines neither waits
for each token in turn nor floods DRP). Work on one machine is serialised
(:class:`KeyedLocks`), and a state older than one already written is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from broker_bridge.concurrency import KeyedLocks
from broker_bridge.config import BridgeConfig
from broker_bridge.intake import BadInput, slim_machine
from broker_bridge.models import Context, Machine
from broker_bridge.sink import Sink, Stored, fingerprint
from broker_bridge.translate import BadObject, Wanted, wanted
from pool.contexts.models import ContextSpec
from pool.drp.client import DrpClient
from pool.drp.errors import DrpNotFoundError
from pool.errors import CtxpoolError

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class WriteReport:
    """What a batch did. ``keep``: machines whose stored context is accounted for (wanted,
    bad, or left to a newer event), which a resync must not remove as extra."""

    applied: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    bad: int = 0
    newer: int = 0
    keep: set[str] = field(default_factory=set)

    def add(self, other: WriteReport) -> None:
        self.applied += other.applied
        self.removed += other.removed
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.bad += other.bad
        self.newer += other.newer
        self.keep |= other.keep


def needs_write(target: Wanted | None, current: Stored | None) -> bool:
    """Whether the store's state (``current``, None when unknown) differs from ``target``
    (None: no container wanted)."""
    if target is None:
        return current is not None and current.present
    if current is None or not current.present:
        return True
    return current.fingerprint != fingerprint(target.context, target.image, target.tag)


class Writer:
    """Converges machines' desired state. ``contexts`` is DRP's context list (kept up to date
    by events and resyncs); ``machines`` the last known state of every machine (slim)."""

    def __init__(
        self,
        client: DrpClient,
        sink: Sink,
        config: BridgeConfig,
        stats: Counter[str],
        bad: BadInput,
        locks: KeyedLocks,
    ) -> None:
        self.client = client
        self.sink = sink
        self.config = config
        self.stats = stats
        self.bad = bad
        self.locks = locks
        self._contexts: dict[str, Context] = {}
        self._contexts_version = 0
        self.machines: dict[str, Machine] = {}
        #: monotonic time of each machine's latest event (a listing older than it is stale)
        self.event_at: dict[str, float] = {}
        #: monotonic stamp of the newest state written (or found in the store) per machine
        self.written_at: dict[str, float] = {}
        #: uuid -> (machine, contexts version, target) last computed (resyncs of unchanged
        #: machines skip translating them again)
        self._targets: dict[str, tuple[Machine, int, Wanted | None]] = {}
        self._drp = asyncio.Semaphore(config.drp_calls)
        self._threads = asyncio.Semaphore(config.writers)

    @property
    def contexts(self) -> dict[str, Context]:
        """DRP's contexts by name (read-only here: change them with :meth:`set_context` or by
        assigning a whole new dict)."""
        return self._contexts

    @contexts.setter
    def contexts(self, value: dict[str, Context]) -> None:
        if value != self._contexts:
            self._contexts_version += 1
        self._contexts = value

    def set_context(self, name: str, context: Context | None) -> None:
        """One context changed (None: deleted)."""
        if context is None:
            self._contexts.pop(name, None)
        else:
            self._contexts[name] = context
        self._contexts_version += 1

    def target(self, machine: Machine) -> Wanted | None:
        """The container ``machine`` wants (see :func:`~broker_bridge.translate.wanted`).

        Raises:
            BadObject: its params have the wrong type, or its context no image.
        """
        cached = self._targets.get(machine.uuid)
        if cached is not None and cached[0] is machine and cached[1] == self._contexts_version:
            return cached[2]
        target = wanted(machine, self._contexts, self.config.engine, self.config.default_tag)
        self._targets[machine.uuid] = (machine, self._contexts_version, target)
        return target

    def newer_than(self, uuid: str, listed_at: float | None) -> bool:
        """Whether an event for ``uuid`` arrived after a listing requested at ``listed_at``."""
        return listed_at is not None and self.event_at.get(uuid, -math.inf) > listed_at

    async def in_thread(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a (blocking) sink call in a worker thread, at most ``writers`` at once."""
        async with self._threads:
            return await asyncio.to_thread(fn, *args)

    async def converge(
        self,
        items: Sequence[tuple[str, Machine | None]],
        *,
        aggregated: bool,
        listed_at: float | None = None,
        absent_via_extras: bool = False,
        stamps: Mapping[str, float] | None = None,
    ) -> WriteReport:
        """Make the store match ``items`` (machine None: deleted).

        The machines of a batch are held (per machine, FIFO) from the comparison to the end
        of their writes, and a state older than one already written for a machine is
        dropped, so two batches carrying one machine cannot leave the older state behind.

        Args:
            items: machines and their latest state.
            aggregated: their params include their profiles' (listed with
                ``aggregate=true``); otherwise machines with profiles are read again.
            listed_at: when the listing they come from was requested (monotonic); a machine
                with an event since then is left to the event path.
            absent_via_extras: a resync: machines that want no container are not read here
                (the resync's pass over extra contexts removes the stored ones).
            stamps: how recent each item's state is (monotonic; default ``listed_at``, or
                now). The event path passes each machine's latest event time.

        Raises:
            StoreError: the store could not be read; nothing was written.
        """
        report = WriteReport()
        now = time.monotonic()
        stamp = {
            uuid: (stamps or {}).get(uuid, listed_at if listed_at is not None else now)
            for uuid, _ in items
        }
        async with self.locks.hold_all(stamp):
            if not aggregated:
                items = await self._aggregate(items, report)
            targets = self._targets_of(items, stamp, listed_at, absent_via_extras, report)
            if targets:
                expected = [(uuid, None if t is None else (t.context, t.image, t.tag))
                            for uuid, t in targets.items()]  # fmt: skip
                differing = await self.in_thread(self.sink.compare, expected)
                applies: list[tuple[str, Wanted]] = []
                removes: list[str] = []
                for uuid, target in targets.items():
                    if uuid not in differing or not needs_write(target, differing[uuid]):
                        report.unchanged += 1  # (the store answers only for what differs)
                        self._written(uuid, stamp[uuid])
                    elif target is None:
                        removes.append(uuid)
                    else:
                        applies.append((uuid, target))
                if applies or removes:
                    await self._write(applies, removes, stamp, report)
        self.stats["applied"] += report.applied
        self.stats["removed"] += report.removed
        self.stats["errors"] += report.failed
        return report

    def _targets_of(
        self,
        items: Sequence[tuple[str, Machine | None]],
        stamp: Mapping[str, float],
        listed_at: float | None,
        absent_via_extras: bool,
        report: WriteReport,
    ) -> dict[str, Wanted | None]:
        """What each machine wants (None: no container), leaving out machines whose state
        here is stale and machines of the wrong shape."""
        targets: dict[str, Wanted | None] = {}
        for uuid, machine in items:
            if self.newer_than(uuid, listed_at) or stamp[uuid] < self.written_at.get(
                uuid, -math.inf
            ):
                report.newer += 1  # a newer state was or will be written: not this one
                report.keep.add(uuid)
                continue
            if machine is None:
                self.machines.pop(uuid, None)
                self._targets.pop(uuid, None)
                targets[uuid] = None
                continue
            self.machines[uuid] = machine
            try:
                target = self.target(machine)
            except BadObject as exc:  # left as it was
                self.bad.object(exc)
                report.bad += 1
                report.keep.add(uuid)
                continue
            if target is not None:
                report.keep.add(uuid)
            elif absent_via_extras:
                continue
            targets[uuid] = target
        return targets

    def _written(self, uuid: str, stamp: float) -> None:
        if stamp > self.written_at.get(uuid, -math.inf):
            self.written_at[uuid] = stamp

    async def _aggregate(
        self, items: Sequence[tuple[str, Machine | None]], report: WriteReport
    ) -> list[tuple[str, Machine | None]]:
        """Events carry a machine's own params: read the ones with profiles aggregated (a
        tag may come from a profile)."""

        async def one(uuid: str, machine: Machine | None) -> tuple[str, Machine | None] | None:
            if machine is None or not machine.profiles:
                return uuid, machine
            try:
                async with self._drp:
                    path = f"/api/v3/machines/{quote(uuid, safe='')}?aggregate=true"
                    raw = await self.client.request("GET", path)
                return uuid, slim_machine(raw, uuid)
            except DrpNotFoundError:
                return None  # deleted meanwhile: its delete event follows
            except BadObject as exc:
                self.bad.object(exc)
                report.bad += 1
            except CtxpoolError as exc:
                log.warning("machine %s: not read (%s); the next resync retries", uuid, exc)
                report.failed += 1
            report.keep.add(uuid)
            return None

        done = await asyncio.gather(*(one(u, m) for u, m in items))
        return [item for item in done if item is not None]

    async def _write(
        self,
        applies: list[tuple[str, Wanted]],
        removes: list[str],
        stamp: Mapping[str, float],
        report: WriteReport,
    ) -> None:
        """Fetch the machine tokens (concurrently, at most ``drp_calls`` at once), then write
        the batch in one sink call. Failures are counted and logged once per batch."""
        tokens = await asyncio.gather(
            *(self._token(uuid) for uuid, _ in applies), return_exceptions=True
        )
        specs: list[tuple[ContextSpec, str | None]] = []
        failed: list[tuple[str, BaseException]] = []
        for (uuid, target), token in zip(applies, tokens, strict=True):
            if isinstance(token, BaseException):
                failed.append((uuid, token))
                continue
            try:
                specs.append((target.spec(token, self.config.endpoints), target.owner))
            except BadObject as exc:
                self.bad.object(exc)
                report.bad += 1
        if specs or removes:
            try:
                await self.in_thread(self.sink.write, specs, removes)
            except Exception as exc:
                failed += [(spec.uuid, exc) for spec, _ in specs] + [(u, exc) for u in removes]
            else:
                report.applied += len(specs)
                report.removed += len(removes)
                for uuid in [spec.uuid for spec, _ in specs] + removes:
                    self._written(uuid, stamp[uuid])
        if failed:
            report.failed += len(failed)
            first, error = failed[0]
            if isinstance(error, CtxpoolError):  # DRP or the store: expected, no traceback
                log.warning("%d machines not written (%s: %s); the next resync retries",
                            len(failed), first, error)  # fmt: skip
            else:
                log.error("%d machines not written (%s: bug?); the next resync retries",
                          len(failed), first, exc_info=error)  # fmt: skip

    async def _token(self, uuid: str) -> str:
        async with self._drp:
            return await self.client.machine_token(uuid, self.config.machine_token_ttl_s)


__all__ = ["WriteReport", "Writer", "needs_write"]
