"""Resync: list DRP and fix the store (missing, changed and extra contexts, contexts of stalled
nodes, clusters), after every (re)connect and every ``resync_s``.

DRP is listed page by page (``slim``, ``aggregate=true``). Each page is compared with the store
in one read and its differences written while the next page is listed (up to
``pages_in_flight`` pages at once). Machines with an event newer than their page are left to
the event path. A resync in which every wanted machine's desired state was written is
*complete*: its start time is recorded in the store (nodes use it to remove containers of
machines deleted while Redis was down) under the store's epoch, so a resync that spanned a
data loss records nothing. A resync with failed writes raises
:class:`ResyncIncompleteError`, and the resync loop tries again after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from broker_bridge.clusters import Clusters
from broker_bridge.coalesce import Coalescer
from broker_bridge.config import BridgeConfig
from broker_bridge.intake import BadInput, slim_machine
from broker_bridge.models import Machine
from broker_bridge.sink import Sink
from broker_bridge.translate import SLIM_PARAMS, BadObject
from broker_bridge.writes import Writer, WriteReport
from pool.drp.client import DrpClient
from pool.drp.params import MEMBER_PARAM
from pool.errors import CtxpoolError

log = logging.getLogger(__name__)

#: How long the stamp of a written state is kept after a resync listed past it.
STAMPS_KEPT_S = 60.0
SLIM_QUERY = "aggregate=true&slim=Meta&params=" + ",".join(sorted(SLIM_PARAMS))


class ResyncIncompleteError(CtxpoolError):
    """A resync ran to its end but some machines' desired state could not be written."""

    def __init__(self, report: WriteReport) -> None:
        super().__init__(f"{report.failed} machines not written; not complete")
        self.report = report


class Resyncer:
    """One resync at a time, over the bridge's writer, clusters and pending events."""

    def __init__(
        self,
        client: DrpClient,
        sink: Sink,
        config: BridgeConfig,
        writer: Writer,
        clusters: Clusters,
        pending: Coalescer[Machine | None],
        bad: BadInput,
    ) -> None:
        self.client = client
        self.sink = sink
        self.config = config
        self.writer = writer
        self.clusters = clusters
        self.pending = pending
        self.bad = bad
        self.completed_at: float | None = None  # unix start time of the last complete one

    async def run(self) -> dict[str, int]:
        """List DRP and fix the store.

        Returns:
            Counts: listed, applied, removed, unchanged, bad, extra, replaced.

        Raises:
            DrpError: DRP could not be listed.
            StoreError: the store could not be read or written.
            ResyncIncompleteError: it ran, but some writes failed.
        """
        epoch, fresh = await self.writer.in_thread(self.sink.begin_resync)
        if fresh and self.config.fresh_store_wait_s:
            # The store was empty (first start, or Redis lost its data): nodes need one
            # membership period to register again, so that nudges can go to the node DRP names
            # as a context's owner (it keeps its container) rather than to any node of the tag.
            log.info(
                "resync: the state store is new or lost its data; waiting %.1fs for nodes",
                self.config.fresh_store_wait_s,
            )
            await asyncio.sleep(self.config.fresh_store_wait_s)
        started_at, listed_from = time.time(), time.monotonic()
        self.writer.contexts = await self.client.contexts()
        report = WriteReport()
        members: dict[str, list[str]] = {}
        listed = await self._machines(report, members)
        await self.clusters.resync(members)

        extra = await self.writer.in_thread(self.sink.present_except, report.keep)
        extra = {u for u in extra if not self.writer.newer_than(u, listed_from)}
        if extra:
            removed = await self.writer.converge(
                [(uuid, None) for uuid in sorted(extra)], aggregated=True, listed_at=listed_from
            )
            report.add(removed)
        replaced = await self.writer.in_thread(self.sink.renudge_stalled)
        self._forget_events_before(listed_from)
        counts = {
            "listed": listed,
            "applied": report.applied,
            "removed": report.removed,
            "unchanged": report.unchanged,
            "bad": report.bad,
            "extra": len(extra),
            "replaced": replaced,
        }
        log.info(
            "resync: %d machines listed, %d written, %d removed (%d extra), %d unchanged, "
            "%d bad, %d of stalled nodes re-placed, %d failed",
            listed, report.applied, report.removed, len(extra), report.unchanged, report.bad,
            replaced, report.failed,
        )  # fmt: skip
        if report.failed:
            raise ResyncIncompleteError(report)
        if await self.writer.in_thread(self.sink.resync_completed, epoch):
            self.completed_at = started_at
        else:
            log.warning("resync: the state store lost its data meanwhile; resyncing again")
            raise ResyncIncompleteError(report)
        return counts

    async def _machines(self, report: WriteReport, members: dict[str, list[str]]) -> int:
        """List every machine; compare and write page by page, the next page listed while
        earlier ones are written. Returns how many were listed."""
        in_flight = asyncio.Semaphore(self.config.pages_in_flight)
        pages: list[asyncio.Task[WriteReport]] = []
        listed = 0
        try:
            pager = self.client.list_pages("machines", SLIM_QUERY, self.config.page_size)
            async with _closing(pager):
                while True:
                    requested = time.monotonic()
                    page = await anext(pager, None)
                    if page is None:
                        break
                    batch = self._parse(page, requested, members)
                    listed += len(page)
                    del page  # raw JSON: garbage now, not through the next page's wait
                    await in_flight.acquire()
                    pages.append(asyncio.ensure_future(self._page(batch, requested, in_flight)))
                    await asyncio.sleep(0)  # let events in between pages
            for done in await asyncio.gather(*pages):
                report.add(done)
        finally:
            for task in pages:
                task.cancel()
            await asyncio.gather(*pages, return_exceptions=True)
        return listed

    def _parse(
        self, page: list[Any], requested: float, members: dict[str, list[str]]
    ) -> list[tuple[str, Machine | None]]:
        batch: list[tuple[str, Machine | None]] = []
        known = self.writer.machines
        for raw in page:
            try:
                machine = slim_machine(raw, known=known)
            except BadObject as exc:
                self.bad.object(exc)
                continue
            member_of = machine.params.get(MEMBER_PARAM)
            if isinstance(member_of, str):
                members.setdefault(member_of, []).append(machine.uuid)
            if not self.writer.newer_than(machine.uuid, requested):
                self.pending.drain_key(machine.uuid)  # the listing supersedes older events
            batch.append((machine.uuid, machine))
        return batch

    async def _page(
        self, batch: list[tuple[str, Machine | None]], requested: float, done: asyncio.Semaphore
    ) -> WriteReport:
        try:
            return await self.writer.converge(
                batch, aggregated=True, listed_at=requested, absent_via_extras=True
            )
        finally:
            done.release()

    def _forget_events_before(self, listed_from: float) -> None:
        """Event times older than this listing cannot matter to any later one; the stamps of
        written states are kept a while longer (a batch may still wait for its machines)."""
        event_at, written_at = self.writer.event_at, self.writer.written_at
        for uuid in [u for u, t in event_at.items() if t <= listed_from]:
            del event_at[uuid]
        for uuid in [u for u, t in written_at.items() if t <= listed_from - STAMPS_KEPT_S]:
            del written_at[uuid]


@contextlib.asynccontextmanager
async def _closing(pager: AsyncIterator[Any]) -> AsyncIterator[None]:
    """Close an async generator even when its consumer stops early."""
    try:
        yield
    finally:
        close = getattr(pager, "aclose", None)
        if close is not None:
            await close()


__all__ = ["SLIM_QUERY", "ResyncIncompleteError", "Resyncer"]
