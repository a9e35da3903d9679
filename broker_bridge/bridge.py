"""The bridge: DRP events and resyncs in, desired context state and nudges out.

Events are hints (DRP drops some under load and never reconnects a broken stream); DRP's REST
API is the truth. The jobs, one module each:

- :mod:`~broker_bridge.intake`: every frame is parsed once and filtered cheaply; a machine's
  change goes into a :class:`~broker_bridge.coalesce.Coalescer`, so a burst of updates to one
  machine becomes one write carrying the latest object;
- :mod:`~broker_bridge.writes`: the machines whose window closed are compared with the store in
  one read and written, serialised per machine, in worker threads (so a slow Redis or a resync
  of 10,000 machines never blocks event intake);
- :mod:`~broker_bridge.resync`: every (re)connect and every ``resync_s``, DRP is listed and the
  store fixed;
- :mod:`~broker_bridge.clusters`: the context broker (member machines of clusters);
- :mod:`~broker_bridge.supervise`: the intake, flusher and resync loops survive any exception,
  and their health is reported (``/healthz``, ``/metrics``).

This module wires them together. The bridge writes through a :class:`~broker_bridge.sink.Sink`
(the pool's Python API in production), names preferred nodes but never claims, and never
touches Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter

from broker_bridge.clusters import Clusters, PendingCluster
from broker_bridge.coalesce import Coalescer
from broker_bridge.concurrency import KeyedLocks, TaskSet
from broker_bridge.config import BridgeConfig
from broker_bridge.intake import (
    BadInput,
    ClusterChange,
    ContextChange,
    Drop,
    MachineChange,
    parse_frame,
    slim_machine,
)
from broker_bridge.models import Context, Machine
from broker_bridge.resync import Resyncer
from broker_bridge.sink import Sink
from broker_bridge.supervise import LoopControl, LoopSpec, Supervisor
from broker_bridge.translate import BadObject, registered_nodes
from broker_bridge.writes import Writer
from pool.contexts.placement import NodeLoads
from pool.drp.client import DrpClient
from pool.drp.errors import DrpFrameTooLargeError
from pool.drp.params import MEMBER_PARAM
from pool.errors import CtxpoolError
from pool.health import Health

log = logging.getLogger(__name__)

#: Frames taken in a row before intake lets other work run (and reports its health).
FRAMES_PER_TURN = 256
#: The flusher is unhealthy when no round succeeded for this long.
FLUSHER_STALE_S = 30.0


class Bridge:
    """One bridge for one DRP endpoint."""

    def __init__(
        self,
        client: DrpClient,
        sink: Sink,
        config: BridgeConfig,
        health: Health | None = None,
    ) -> None:
        self.client = client
        self.sink = sink
        self.config = config
        self.stats: Counter[str] = Counter()
        self.health = health or Health("bridge")
        self.bad = BadInput(self.stats)
        self.locks = KeyedLocks()
        self.tasks = TaskSet()
        self.pending: Coalescer[Machine | None] = Coalescer(config.coalesce_s)
        self.writer = Writer(client, sink, config, self.stats, self.bad, self.locks)
        self.clusters = Clusters(
            client,
            config,
            self._live_nodes,
            self.locks,
            self.tasks,
            self.bad,
            self.stats,
            self.registered_nodes,
        )
        self.resyncer = Resyncer(
            client, sink, config, self.writer, self.clusters, self.pending, self.bad
        )
        self._resync_wanted = asyncio.Event()

    @property
    def contexts(self) -> dict[str, Context]:
        """DRP's contexts, by name."""
        return self.writer.contexts

    @contexts.setter
    def contexts(self, value: dict[str, Context]) -> None:
        self.writer.contexts = value

    @property
    def machines(self) -> dict[str, Machine]:
        """The last known (slim) state of every machine."""
        return self.writer.machines

    @property
    def cluster_pending(self) -> Coalescer[PendingCluster]:
        """Clusters in their coalescing window."""
        return self.clusters.pending

    # ---- intake -----------------------------------------------------------------------------

    def handle_text(self, text: str) -> None:
        """Take one websocket frame. Never raises: bad input is logged once and counted."""
        self.stats["events"] += 1
        try:
            change = parse_frame(text)
        except BadObject as exc:
            self.bad.object(exc)
            return
        if isinstance(change, Drop):
            if change is not Drop.ACK:
                self.stats[change.value] += 1
        elif isinstance(change, MachineChange):
            self._machine_changed(change)
        elif isinstance(change, ContextChange):
            self._context_changed(change)
        elif isinstance(change, ClusterChange):
            self.clusters.offer(change.kind, change.uuid, change.cluster)

    def _machine_changed(self, change: MachineChange) -> None:
        self.writer.event_at[change.uuid] = time.monotonic()
        if change.machine is None:
            cached = self.machines.get(change.uuid)
            cluster = cached.params.get(MEMBER_PARAM) if cached else None
            if isinstance(cluster, str):
                self.clusters.member_gone(cluster)  # top the cluster up
        self.pending.offer(change.uuid, change.machine)

    def _context_changed(self, change: ContextChange) -> None:
        self.writer.set_context(change.name, change.context)
        for machine in self.machines.values():  # re-evaluate its users
            if machine.context == change.name:  # (a pending event for one is newer)
                self.pending.offer_if_idle(machine.uuid, machine)

    # ---- writes -----------------------------------------------------------------------------

    async def flush(self) -> int:
        """Converge every machine (and cluster) whose coalescing window has closed."""
        due = self.pending.due()
        size = self.config.page_size
        for start in range(0, len(due), size):
            self._spawn_events(due[start : start + size], "event writes")
        clusters = self.clusters.pending.due()
        for uuid, (kind, cluster) in clusters:
            self.clusters.spawn(kind, uuid, cluster)
        return len(due) + len(clusters)

    async def converge(self, uuid: str, machine: Machine | None, aggregated: bool = False) -> None:
        """Make the store's desired state for ``uuid`` match ``machine`` (None: deleted) now.

        ``aggregated``: the machine's params already include its profiles'."""
        await self._converge_events([(uuid, machine)], aggregated)

    def _spawn_events(self, batch: list[tuple[str, Machine | None]], name: str) -> None:
        """Converge machines released from the coalescer, each stamped now with the time of
        its latest event (a batch released later carries newer states)."""
        event_at = self.writer.event_at
        stamps = {uuid: event_at[uuid] for uuid, _ in batch if uuid in event_at}
        self.tasks.spawn(self._converge_events(batch, stamps=stamps), name)

    async def _converge_events(
        self,
        batch: list[tuple[str, Machine | None]],
        aggregated: bool = False,
        stamps: dict[str, float] | None = None,
    ) -> None:
        try:
            await self.writer.converge(batch, aggregated=aggregated, stamps=stamps)
        except CtxpoolError as exc:
            self.stats["errors"] += len(batch)
            log.warning("%d machines not converged (%s); the next resync retries", len(batch), exc)
        except Exception:
            self.stats["errors"] += len(batch)
            log.error("%d machines not converged (bug?); the next resync retries", len(batch),
                      exc_info=True)  # fmt: skip

    async def idle(self) -> None:
        """Wait for every write started so far (tests, shutdown)."""
        await self.tasks.idle()

    async def _live_nodes(self, tag: str) -> NodeLoads:
        return await self.writer.in_thread(self.sink.live_nodes, tag)

    def registered_nodes(self) -> dict[str, frozenset[str]]:
        """Nodes registered in DRP (member name -> its machine's tags there), as the last
        listing and the events since show the machines."""
        return registered_nodes(self.machines.values(), self.bad.object)

    # ---- resync -----------------------------------------------------------------------------

    def request_resync(self) -> None:
        self._resync_wanted.set()

    async def resync(self) -> dict[str, int]:
        """List DRP and fix the store; see :meth:`Resyncer.run` (and its errors)."""
        self.stats["resyncs"] += 1
        return await self.resyncer.run()

    # ---- loops ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume events, flush coalesced writes, resync on connect and periodically, until
        ``stop``; then converge what is still pending."""
        supervisor = Supervisor(
            self.health, stop, self.config.backoff_base_s, self.config.backoff_cap_s
        )
        try:
            await supervisor.run(
                {
                    "intake": LoopSpec(self._intake, math.inf),
                    "flusher": LoopSpec(self._flusher, FLUSHER_STALE_S),
                    "resync": LoopSpec(self._resyncer, 2 * self.config.resync_s),
                }
            )
        finally:
            await self.drain()

    async def drain(self) -> None:
        """Converge every machine and cluster still in its coalescing window, now, and wait
        for every write (shutdown, benches)."""
        pending = self.pending.drain()
        size = self.config.page_size
        for start in range(0, len(pending), size):
            self._spawn_events(pending[start : start + size], "drain")
        for uuid, (kind, cluster) in self.clusters.pending.drain():
            self.clusters.spawn(kind, uuid, cluster)
        await self.idle()

    async def _intake(self, loop: LoopControl) -> None:
        def registered() -> None:
            loop.ok()
            self.request_resync()

        while not loop.stopping:
            try:
                taken = 0
                async for text in self.client.events(on_registered=registered):
                    self.handle_text(text)
                    taken += 1
                    if taken % FRAMES_PER_TURN == 0:
                        loop.ok()
                        await asyncio.sleep(0)  # let writes progress during a flood
                self.stats["reconnects"] += 1
                log.warning("DRP closed the event stream; reconnecting")
                await loop.sleep(loop.backoff.next_s())
            except asyncio.CancelledError:
                raise
            except DrpFrameTooLargeError as exc:
                self.stats["reconnects"] += 1
                self.bad("oversize-frame", f"{exc}; reconnecting (a resync reads it from REST)")
                await loop.sleep(loop.backoff.next_s())
            except Exception as exc:
                self.stats["reconnects"] += 1
                await loop.failed(exc, "DRP event stream")

    async def _flusher(self, loop: LoopControl) -> None:
        tick = max(0.005, self.config.coalesce_s / 4)
        while not loop.stopping:
            try:
                await self.flush()
                loop.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await loop.failed(exc, "flush")
                continue
            wait = min(
                (w for w in (self.pending.next_due_in(), self.clusters.pending.next_due_in())
                 if w is not None),
                default=None,
            )  # fmt: skip
            await asyncio.sleep(tick if wait is None else min(max(wait, 0.001), tick))

    async def _resyncer(self, loop: LoopControl) -> None:
        while not loop.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_wanted.wait(), self.config.resync_s)
            self._resync_wanted.clear()
            try:
                await self.resync()
                loop.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await loop.failed(exc, "resync")
                self.request_resync()


__all__ = ["Bridge", "BridgeConfig", "Sink", "slim_machine"]
