"""The bridge: DRP events and resyncs in, desired context state and nudges out.

Events are hints (DRP drops some under load and never reconnects a broken stream); DRP's REST
API is the truth. So:

- every event is parsed once, checked cheaply (type, action, whether the change can matter)
  and offered to a :class:`~broker_bridge.coalesce.Coalescer`: a burst of updates to one
  machine becomes one write carrying the latest object;
- every (re)connect, and every ``resync_s``, the bridge lists DRP (paged, slim) and compares
  it with the state store: missing, extra and changed contexts are fixed;
- store writes run in worker threads, serialised per machine, so a resync of 10,000 machines
  or a slow Redis never blocks event intake.

The bridge writes through a :class:`Sink` (the pool's Python API in production) and never
touches Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from broker_bridge.clusters import reconcile_cluster
from broker_bridge.coalesce import Coalescer
from broker_bridge.models import Context, Machine
from broker_bridge.translate import (
    SLIM_PARAMS,
    BadObject,
    Wanted,
    relevant_change,
    wanted,
)
from pool.backoff import Backoff
from pool.contexts.models import ContextSpec
from pool.drp.client import DrpClient
from pool.drp.errors import DrpAuthError, DrpError
from pool.drp.params import MEMBER_PARAM

log = logging.getLogger(__name__)

MACHINE_TYPES = frozenset({"machines"})
CLUSTER_TYPES = frozenset({"clusters", "resource_brokers"})
ACTIONS = frozenset({"create", "save", "update", "delete", "destroy"})
DELETES = frozenset({"delete", "destroy"})
#: Events bigger than this are skipped (a resync picks the object up from REST).
MAX_EVENT_BYTES = 4 * 1024 * 1024
SLIM_QUERY = "aggregate=true&slim=Meta&params=" + ",".join(sorted(SLIM_PARAMS))


class Sink(Protocol):
    """Where desired state goes (sync; called from worker threads)."""

    def current(self, uuid: str) -> tuple[bool, str | None] | None:
        """``(present, fingerprint)`` the store holds for ``uuid``, or None when unknown."""
        ...

    def known_present(self) -> set[str]:
        """Every context the store wants present."""
        ...

    def apply(self, spec: ContextSpec, owner_hint: str | None) -> None: ...

    def remove(self, uuid: str) -> None: ...

    def renudge_stalled(self) -> int:
        """Re-place contexts whose owner's heartbeat expired; returns how many."""
        ...

    def live_nodes(self, tag: str) -> dict[str, tuple[int, int]]:
        """Live nodes serving ``tag``: name -> (contexts they run, capacity)."""
        ...


def fingerprint(w: Wanted) -> str:
    """What must match for a stored spec to be up to date (the token is not part of it)."""
    return f"{w.context}|{w.image}|{w.tag}"


def spec_fingerprint(spec: ContextSpec) -> str:
    return f"{spec.context}|{spec.image}|{spec.tag}"


@dataclass
class BridgeConfig:
    engine: str = "docker-context"
    default_tag: str = "default"
    endpoints: tuple[str, ...] = ()
    coalesce_s: float = 0.25
    resync_s: float = 300.0
    machine_token_ttl_s: int = 365 * 86400
    page_size: int = 500
    writers: int = 8
    broker_name: str = "context-broker"


class Bridge:
    """One bridge for one DRP endpoint."""

    def __init__(self, client: DrpClient, sink: Sink, config: BridgeConfig) -> None:
        self.client = client
        self.sink = sink
        self.config = config
        self.contexts: dict[str, Context] = {}
        self.machines: dict[str, Machine] = {}
        self.written: dict[str, str | None] = {}  # uuid -> fingerprint written (None: absent)
        self.pending: Coalescer[Machine | None] = Coalescer(config.coalesce_s)
        self.cluster_pending: Coalescer[tuple[str, Machine | None]] = Coalescer(config.coalesce_s)
        self.clusters: dict[str, str] = {}  # cluster uuid -> kind (clusters | resource_brokers)
        self.stats: Counter[str] = Counter()
        self._logged_bad: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._resync_wanted = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(config.writers)

    # ---- intake -----------------------------------------------------------------------------

    def _bad(self, key: str, reason: str) -> None:
        self.stats["malformed"] += 1
        if key not in self._logged_bad:
            self._logged_bad.add(key)
            if len(self._logged_bad) > 10_000:
                self._logged_bad.clear()
            log.warning("skipped a bad DRP event/object (%s): %s", key, reason)

    def handle_text(self, text: str) -> None:
        """Take one websocket frame. Never raises: bad input is logged once and counted."""
        self.stats["events"] += 1
        if len(text) > MAX_EVENT_BYTES:
            self._bad("oversize", f"event of {len(text)} bytes")
            return
        try:
            event = orjson.loads(text)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            self._bad("json", f"not JSON: {text[:80]!r}")
            return
        if not isinstance(event, dict):
            self._bad("shape", "event is not a JSON object")
            return
        kind, action, key = event.get("Type"), event.get("Action"), event.get("Key")
        if kind == "websocket":
            return
        if not isinstance(kind, str) or not isinstance(action, str) or not isinstance(key, str):
            self._bad("fields", f"event without Type/Action/Key: {sorted(event)[:8]}")
            return
        if action not in ACTIONS:
            self._bad(f"action:{action}", f"unknown action {action!r}")
            return
        if kind in MACHINE_TYPES:
            self._machine_event(action, key, event.get("Object"), event.get("Original"))
        elif kind == "contexts":
            self._context_event(action, key, event.get("Object"))
        elif kind in CLUSTER_TYPES:
            self._cluster_event(kind, action, key, event.get("Object"))
        else:
            self.stats["unrelated"] += 1

    def _cluster_event(self, kind: str, action: str, key: str, obj: Any) -> None:
        self.stats["cluster_events"] += 1
        if action in DELETES:
            self.cluster_pending.offer(key, (kind, None))
            return
        try:
            cluster = Machine.model_validate(obj)
        except ValueError as exc:
            self._bad(key, f"{kind}: {exc.__class__.__name__}")
            return
        self.clusters[cluster.uuid] = kind
        self.cluster_pending.offer(cluster.uuid, (kind, cluster))

    def _machine_event(self, action: str, key: str, obj: Any, original: Any) -> None:
        if action in DELETES:
            cached = self.machines.get(key)
            owner = cached.params.get(MEMBER_PARAM) if cached else None
            if isinstance(owner, str) and owner in self.clusters:
                self._recheck_cluster(owner)  # a member went away: top the cluster up
            self.pending.offer(key, None)
            return
        if not isinstance(obj, dict):
            self._bad(key, "machine event without an Object")
            return
        if isinstance(original, dict) and not relevant_change(original, obj):
            self.stats["irrelevant"] += 1
            return
        machine = slim_machine(obj)
        if machine is None:
            self._bad(key, "machine object without a valid Uuid/Params")
            return
        self.pending.offer(machine.uuid, machine)

    def _context_event(self, action: str, key: str, obj: Any) -> None:
        if action in DELETES:
            self.contexts.pop(key, None)
        else:
            try:
                ctx = Context.model_validate(obj)
            except ValueError as exc:
                self._bad(key, f"context: {exc.__class__.__name__}")
                return
            self.contexts[ctx.name] = ctx
        for machine in self.machines.values():  # re-evaluate its users
            if machine.context == key:  # (a pending event for one is newer than the cache)
                self.pending.offer_if_idle(machine.uuid, machine)

    # ---- writes -----------------------------------------------------------------------------

    def _recheck_cluster(self, uuid: str) -> None:
        """Re-read a cluster from DRP and reconcile it (after one of its members changed)."""
        self._spawn(self._refetch_cluster(uuid))

    async def _refetch_cluster(self, uuid: str) -> None:
        kind = self.clusters.get(uuid, "clusters")
        try:
            raw = await self.client.request("GET", f"/api/v3/{kind}/{uuid}")
            cluster = Machine.model_validate(raw)
        except DrpError as exc:
            log.warning("cluster %s: not re-read (%s); the next resync retries", uuid, exc)
            return
        except ValueError as exc:
            self._bad(uuid, f"cluster: {exc.__class__.__name__}")
            return
        self.cluster_pending.offer(uuid, (kind, cluster))

    async def flush(self) -> int:
        """Converge every machine (and cluster) whose coalescing window has closed."""
        due = self.pending.due()
        for uuid, machine in due:
            self._spawn(self.converge(uuid, machine))
        clusters = self.cluster_pending.due()
        for uuid, (kind, cluster) in clusters:
            self._spawn(self.converge_cluster(kind, uuid, cluster))
        return len(due) + len(clusters)

    async def _live_nodes(self, tag: str) -> dict[str, tuple[int, int]]:
        return await asyncio.to_thread(self.sink.live_nodes, tag)

    async def converge_cluster(self, kind: str, uuid: str, cluster: Machine | None) -> None:
        """Give one cluster its count of member machines in DRP (serialised per cluster)."""
        lock = self._locks.setdefault(f"cluster:{uuid}", asyncio.Lock())
        try:
            async with lock:
                await reconcile_cluster(
                    self.client, kind, cluster, uuid, self.config.broker_name, self._live_nodes
                )
            if cluster is None:
                self.clusters.pop(uuid, None)
        except BadObject as exc:
            self._bad(uuid, exc.reason)
        except DrpError as exc:
            self.stats["errors"] += 1
            log.warning("cluster %s: DRP call failed, the next resync retries: %s", uuid, exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def idle(self) -> None:
        """Wait for every write started so far (tests, shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def converge(
        self, uuid: str, machine: Machine | None, force: bool = False, aggregated: bool = False
    ) -> None:
        """Make the store's desired state for ``uuid`` match ``machine`` (None: deleted).

        ``aggregated``: the machine's params already include its profiles' (a resync lists
        with ``aggregate=true``; events carry the machine's own params only).
        """
        lock = self._locks.setdefault(uuid, asyncio.Lock())
        try:
            async with lock, self._sem:
                if machine is not None and machine.profiles and not aggregated:
                    machine = await self._aggregated(uuid) or machine
                await self._converge(uuid, machine, force)
        except DrpError as exc:
            self.stats["errors"] += 1
            log.warning("machine %s: DRP call failed, the next resync retries: %s", uuid, exc)
        except Exception as exc:
            self.stats["errors"] += 1
            log.warning("machine %s: not converged (next resync retries): %s", uuid, exc)
        finally:
            if not lock.locked() and self._locks.get(uuid) is lock:
                del self._locks[uuid]

    async def _aggregated(self, uuid: str) -> Machine | None:
        """The machine with its profiles' params (a tag may come from a profile)."""
        raw = await self.client.request("GET", f"/api/v3/machines/{uuid}?aggregate=true")
        return slim_machine(raw) if isinstance(raw, dict) else None

    async def _converge(self, uuid: str, machine: Machine | None, force: bool) -> None:
        if machine is None:
            self.machines.pop(uuid, None)
            w = None
        else:
            self.machines[uuid] = machine
            try:
                w = wanted(machine, self.contexts, self.config.engine, self.config.default_tag)
            except BadObject as exc:
                self._bad(uuid, exc.reason)
                return
        if w is None:
            known_absent = uuid in self.written and self.written[uuid] is None
            if force or not known_absent:
                current = await asyncio.to_thread(self.sink.current, uuid)
                if current is not None and current[0]:
                    await asyncio.to_thread(self.sink.remove, uuid)
                    self.stats["removed"] += 1
            self.written[uuid] = None
            return
        fp = fingerprint(w)
        if not force and self.written.get(uuid) == fp:
            return
        current = await asyncio.to_thread(self.sink.current, uuid)
        if current is not None and current == (True, fp) and not force:
            self.written[uuid] = fp
            return
        token = await self.client.machine_token(uuid, self.config.machine_token_ttl_s)
        spec = w.spec(token, self.config.endpoints)
        await asyncio.to_thread(self.sink.apply, spec, w.owner)
        self.written[uuid] = fp
        self.stats["applied"] += 1

    # ---- resync -----------------------------------------------------------------------------

    def request_resync(self) -> None:
        self._resync_wanted.set()

    async def resync(self) -> dict[str, int]:
        """List DRP and fix the store: missing, changed and extra contexts."""
        self.stats["resyncs"] += 1
        self.contexts = await self.client.contexts()
        seen: set[str] = set()
        seen_members: dict[str, list[str]] = {}
        report: Counter[str] = Counter()
        async for page in self.client.list_pages("machines", SLIM_QUERY, self.config.page_size):
            for raw in page:
                machine = slim_machine(raw)
                if machine is None:
                    self._bad(str(raw.get("Uuid") if isinstance(raw, dict) else "?"), "resync")
                    continue
                seen.add(machine.uuid)
                member_of = machine.params.get(MEMBER_PARAM)
                if isinstance(member_of, str):
                    seen_members.setdefault(member_of, []).append(machine.uuid)
                self.pending.drain_key(machine.uuid)
                self.written.pop(machine.uuid, None)  # compare with the store, not the cache
                self._spawn(self.converge(machine.uuid, machine, aggregated=True))
                report["listed"] += 1
            await asyncio.sleep(0)  # let events in between pages
        await self.idle()
        await self._resync_clusters(seen_members)
        present = await asyncio.to_thread(self.sink.known_present)
        for uuid in present - seen:
            self.machines.pop(uuid, None)
            self.written.pop(uuid, None)
            self._spawn(self.converge(uuid, None, force=True))
            report["extra"] += 1
        await self.idle()
        report["replaced"] = await asyncio.to_thread(self.sink.renudge_stalled)
        log.info(
            "resync: %d machines listed, %d extra contexts removed, %d of stalled nodes re-placed",
            report["listed"],
            report["extra"],
            report["replaced"],
        )
        return dict(report)

    async def _resync_clusters(self, members: dict[str, list[str]]) -> None:
        """Reconcile every cluster and broker; drain members whose cluster is gone."""
        listed: set[str] = set()
        for kind in sorted(CLUSTER_TYPES):
            async for page in self.client.list_pages(kind, "", self.config.page_size):
                for raw in page:
                    try:
                        cluster = Machine.model_validate(raw)
                    except ValueError as exc:
                        self._bad(str(raw.get("Uuid", "?")), f"{kind}: {type(exc).__name__}")
                        continue
                    listed.add(cluster.uuid)
                    self.clusters[cluster.uuid] = kind
                    self.cluster_pending.drain_key(cluster.uuid)
                    self._spawn(self.converge_cluster(kind, cluster.uuid, cluster))
        for uuid in set(members) - listed:
            self._spawn(self.converge_cluster(self.clusters.get(uuid, "clusters"), uuid, None))
        await self.idle()

    # ---- main loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume events, flush coalesced writes, resync on connect and periodically."""
        tasks = [
            asyncio.ensure_future(self._consume(stop)),
            asyncio.ensure_future(self._flusher(stop)),
            asyncio.ensure_future(self._resyncer(stop)),
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for uuid, machine in self.pending.drain():
            self._spawn(self.converge(uuid, machine))
        await self.idle()

    async def _consume(self, stop: asyncio.Event) -> None:
        delay = Backoff()
        while not stop.is_set():
            try:
                async for text in self.client.events(on_registered=self.request_resync):
                    delay.reset()
                    self.handle_text(text)
                log.warning("DRP closed the event stream; reconnecting")
            except DrpAuthError as exc:
                log.error("DRP refused the bridge's credentials (%s); retrying with backoff", exc)
            except DrpError as exc:
                log.warning("DRP event stream: %s; retrying with backoff", exc)
            self.stats["reconnects"] += 1
            await _sleep_or_stop(stop, delay.next_s())

    async def _flusher(self, stop: asyncio.Event) -> None:
        tick = max(0.005, self.config.coalesce_s / 4)
        while not stop.is_set():
            await self.flush()
            wait = self.pending.next_due_in()
            await asyncio.sleep(tick if wait is None else min(max(wait, 0.001), tick))

    async def _resyncer(self, stop: asyncio.Event) -> None:
        delay = Backoff()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_wanted.wait(), self.config.resync_s)
            self._resync_wanted.clear()
            try:
                await self.resync()
                delay.reset()
            except DrpError as exc:
                log.warning("resync failed: %s; retrying with backoff", exc)
                await _sleep_or_stop(stop, delay.next_s())
                self._resync_wanted.set()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def slim_machine(obj: dict[str, Any]) -> Machine | None:
    """A :class:`Machine` with only the fields the bridge needs (small in memory)."""
    params = obj.get("Params")
    if params is not None and not isinstance(params, dict):
        return None
    uuid = obj.get("Uuid")
    if not isinstance(uuid, str) or not uuid:
        return None
    context = obj.get("Context") or ""
    if not isinstance(context, str):
        return None
    slim = {k: params[k] for k in SLIM_PARAMS if params and k in params}
    profiles = obj.get("Profiles") or []
    if not isinstance(profiles, list):
        return None
    try:
        return Machine(
            uuid=uuid,
            name=str(obj.get("Name") or ""),
            context=context,
            params=slim,
            profiles=[str(p) for p in profiles],
        )
    except ValueError:
        return None


__all__ = ["Bridge", "BridgeConfig", "Sink", "slim_machine"]
