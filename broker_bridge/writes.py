"""Writes: machines' desired state into the store, compared in batches, written per machine.

A batch (the machines whose coalescing window closed, or one listed page) is compared with
the store in one read (:meth:`Sink.current_many`); only machines whose stored state differs are
written. Writes for one machine are serialised (:class:`KeyedLocks`); DRP calls (machine
tokens, aggregated reads) and store writes (threads) each run under their own bound, so a
first resync of 10,000 machines fetches tokens concurrently without flooding DRP.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from broker_bridge.client import DrpClient, DrpNotFoundError
from broker_bridge.concurrency import KeyedLocks
from broker_bridge.config import BridgeConfig
from broker_bridge.intake import BadInput, slim_machine
from broker_bridge.models import Context, Machine
from broker_bridge.sink import Sink, Stored, fingerprint
from broker_bridge.translate import BadObject, Wanted, wanted
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
    stalled: list[tuple[str, Stored]] = field(default_factory=list)
    keep: set[str] = field(default_factory=set)

    def add(self, other: WriteReport) -> None:
        self.applied += other.applied
        self.removed += other.removed
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.bad += other.bad
        self.newer += other.newer
        self.stalled += other.stalled
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
        self.contexts: dict[str, Context] = {}
        self.machines: dict[str, Machine] = {}
        #: monotonic time of each machine's latest event (a listing older than it is stale)
        self.event_at: dict[str, float] = {}
        self._drp = asyncio.Semaphore(config.drp_calls)
        self._threads = asyncio.Semaphore(config.writers)

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
    ) -> WriteReport:
        """Make the store match ``items`` (machine None: deleted).

        Args:
            items: machines and their latest state.
            aggregated: their params include their profiles' (listed with
                ``aggregate=true``); otherwise machines with profiles are read again.
            listed_at: when the listing they come from was requested (monotonic); a machine
                with an event since then is left to the event path.
            absent_via_extras: a resync: machines that want no container are not read here
                (the resync's pass over extra contexts removes the stored ones).

        Raises:
            StoreError: the store could not be read; nothing was written.
        """
        report = WriteReport()
        if not aggregated:
            items = await self._aggregate(items, report)
        targets: dict[str, Wanted | None] = {}
        for uuid, machine in items:
            if self.newer_than(uuid, listed_at):
                report.newer += 1
                report.keep.add(uuid)
                continue
            if machine is None:
                self.machines.pop(uuid, None)
                targets[uuid] = None
                continue
            self.machines[uuid] = machine
            try:
                target = wanted(machine, self.contexts, self.config.engine, self.config.default_tag)
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
        if not targets:
            return report
        stored = await self.in_thread(self.sink.current_many, list(targets))
        jobs = []
        for uuid, target in targets.items():
            current = stored.get(uuid)
            if self.locks.busy(uuid) or needs_write(target, current):
                jobs.append(self._write(uuid, target, listed_at))
            else:
                report.unchanged += 1
                if current is not None and current.stalled:
                    report.stalled.append((uuid, current))
        for outcome in await asyncio.gather(*jobs):
            setattr(report, outcome, getattr(report, outcome) + 1)
        self.stats["applied"] += report.applied
        self.stats["removed"] += report.removed
        self.stats["errors"] += report.failed
        return report

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

    async def _write(self, uuid: str, target: Wanted | None, listed_at: float | None) -> str:
        """Write one machine's desired state (serialised per machine); the outcome's name."""
        try:
            async with self.locks.hold(uuid):
                if self.newer_than(uuid, listed_at):
                    return "newer"
                if target is None:
                    await self.in_thread(self.sink.remove, uuid)
                    return "removed"
                async with self._drp:
                    token = await self.client.machine_token(uuid, self.config.machine_token_ttl_s)
                spec = target.spec(token, self.config.endpoints)
                await self.in_thread(self.sink.apply, spec, target.owner)
                return "applied"
        except BadObject as exc:
            self.bad.object(exc)
            return "bad"
        except CtxpoolError as exc:  # DRP or the store: expected trouble, no traceback
            log.warning("machine %s: not written (%s); the next resync retries", uuid, exc)
            return "failed"
        except Exception:
            log.error("machine %s: not written (bug?); the next resync retries", uuid,
                      exc_info=True)  # fmt: skip
            return "failed"


__all__ = ["WriteReport", "Writer", "needs_write"]
