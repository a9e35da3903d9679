"""The context broker for clusters and resource brokers.

A cluster (or resource broker) whose ``resource/broker`` names the broker this pool serves
(default ``context-broker``) and which has ``cluster/count`` gets exactly that many member
machines in DRP. Each member runs the cluster's ``broker/set-context`` (else the cluster's own
``Context``; both as ``Context`` and ``Meta.BaseContext``) with the cluster's
``docker-context/tag``, gets ``broker/set-pipeline`` as its ``Pipeline`` and
``broker/set-workflow`` as its ``Workflow`` when the cluster sets them, and carries
``ctxpool/cluster: <cluster uuid>``. The cluster's params are read with its profiles'
(``aggregate=true``). The bridge then turns
members into containers like any machine, and the nodes with that tag take them. Raising the
count adds members, lowering it removes the newest, 0 (or deleting the cluster) drains. The
member names are recorded on the cluster as ``cluster/machines``.

New members are spread over the tag's live nodes by :func:`pool.contexts.placement.spread`;
a node registered in DRP (a machine names it in ``docker-context/member-name``) is one of them
only when its machine carries the tag (:func:`pool.contexts.placement.drp_candidates`). The
chosen node is written as the member's ``docker-context/owner``: a *preferred* node
that the bridge passes on with the member's desired state. Only nodes claim; a full or gone
preferred node is passed over and the tag queue decides.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from broker_bridge.coalesce import Coalescer
from broker_bridge.concurrency import KeyedLocks, TaskSet
from broker_bridge.config import BridgeConfig
from broker_bridge.intake import (
    CLUSTER_TYPES,
    AnyCluster,
    BadInput,
    parse_cluster,
    slim_machine,
)
from broker_bridge.models import Machine
from broker_bridge.translate import BadObject, count_of, member_fields, str_param, tag_of
from pool.contexts.placement import NodeLoads, drp_candidates, spread
from pool.drp.client import DrpClient
from pool.drp.errors import DrpError, DrpNotFoundError
from pool.drp.params import (
    MEMBER_PARAM,
    MEMBERS_PARAMS,
    OWNER_PARAM,
    RESOURCE_BROKER_PARAM,
    TAG_PARAM,
)
from pool.errors import CtxpoolError

log = logging.getLogger(__name__)

_INDEX_RE = re.compile(r"-(\d+)$")

#: A pending cluster change: (kind, the cluster, or None when deleted).
PendingCluster = tuple[str, AnyCluster | None]
#: Nodes registered in DRP: member name -> the tags its machine carries.
Registered = Mapping[str, Set[str]]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to change so that a cluster has its count of members."""

    create: list[str]  # names of members to create
    delete: list[str]  # uuids of members to delete (newest first)
    members: list[str]  # names of the members afterwards, sorted


def member_index(name: str) -> int:
    match = _INDEX_RE.search(name)
    return int(match.group(1)) if match else -1


def plan(cluster: Machine, members: list[Machine], broker: str) -> Plan | None:
    """The changes ``cluster`` needs, or None when ctxpool does not broker it.

    Raises:
        BadObject: ``cluster/count``, the tag or a ``broker/set-*`` param has the wrong type.
    """
    if str_param(cluster, (RESOURCE_BROKER_PARAM,)) != broker:
        return None
    count = count_of(cluster)
    if count is None:
        return None
    tag_of(cluster)  # validated here (before any member is created), used by the members
    member_fields(cluster)
    ordered = sorted(members, key=lambda m: (member_index(m.name), m.name))
    keep, extra = ordered[:count], ordered[count:]
    base = cluster.name or cluster.uuid[:8]
    next_index = max([member_index(m.name) for m in ordered] + [0]) + 1
    create = [f"{base}-{next_index + i}" for i in range(count - len(keep))]
    names = sorted([m.name for m in keep] + create, key=lambda n: (member_index(n), n))
    return Plan(create=create, delete=[m.uuid for m in reversed(extra)], members=names)


def member_object(cluster: Machine, name: str, node: str | None = None) -> dict[str, Any]:
    """The DRP machine object of a new member (``node``: the node preferred to run it).

    Its ``Context`` (and ``Meta.BaseContext``), ``Pipeline`` and ``Workflow`` come from the
    cluster's ``broker/set-*`` params (:func:`~broker_bridge.translate.member_fields`); the
    params themselves stay on the cluster (they tell its broker what to apply, not the
    member).

    Raises:
        BadObject: the tag or a ``broker/set-*`` param has the wrong type.
    """
    params: dict[str, Any] = {MEMBER_PARAM: cluster.uuid, TAG_PARAM: tag_of(cluster)}
    if node:
        params[OWNER_PARAM] = node
    return member_fields(cluster).apply({"Name": name, "Params": params})


async def reconcile_cluster(
    client: DrpClient,
    kind: str,
    cluster: AnyCluster | None,
    uuid: str,
    broker: str,
    live_nodes: Callable[[str], Awaitable[NodeLoads]] | None = None,
    bad: BadInput | None = None,
    registered: Callable[[], Registered] | None = None,
) -> Plan | None:
    """Bring one cluster's members in DRP to its count (``cluster`` None: it was deleted).

    New members get preferred nodes among ``live_nodes(tag)`` (the store's), narrowed by
    ``registered()`` (the nodes registered in DRP and their tags there) when given.

    Raises:
        DrpError: DRP calls failed (the next event or resync retries).
        BadObject: the cluster's params have the wrong type.
        StoreError: the live nodes could not be read.
    """
    members = await list_members(client, uuid, bad)
    if cluster is None:
        for member in members:
            await _delete(client, member.uuid)
        if members:
            log.info("cluster %s deleted: removed its %d members", uuid, len(members))
        return None
    todo = plan(cluster, members, broker)
    if todo is None:
        return None
    preferred: list[str | None] = [None] * len(todo.create)
    if todo.create and live_nodes is not None:
        tag = tag_of(cluster)
        nodes = await live_nodes(tag)
        if registered is not None:
            nodes = drp_candidates(nodes, tag, registered())
        preferred = spread(nodes, len(todo.create))
    for name, node in zip(todo.create, preferred, strict=True):
        await client.create("machines", member_object(cluster, name, node))
    for member_uuid in todo.delete:
        await _delete(client, member_uuid)
    if cluster.params.get(MEMBERS_PARAMS[0]) != todo.members:
        await client.set_param(kind, uuid, MEMBERS_PARAMS[0], todo.members)
    if todo.create or todo.delete:
        log.info(
            "cluster %s: %d members (+%d, -%d)",
            cluster.name or uuid,
            len(todo.members),
            len(todo.create),
            len(todo.delete),
        )
    return todo


async def list_members(
    client: DrpClient, cluster_uuid: str, bad: BadInput | None = None
) -> list[Machine]:
    """The member machines of a cluster (members of the wrong shape are skipped).

    Raises:
        DrpError: the listing failed.
    """
    out = []
    async for page in client.list_pages("machines", f"{MEMBER_PARAM}=Eq({cluster_uuid})"):
        for raw in page:
            try:
                member = slim_machine(raw)
            except BadObject as exc:
                if bad is not None:
                    bad.object(exc)
                continue
            if member.params.get(MEMBER_PARAM) == cluster_uuid:
                out.append(member)
    return out


async def _delete(client: DrpClient, uuid: str) -> None:
    with contextlib.suppress(DrpNotFoundError):  # gone already
        await client.delete("machines", uuid)


class Clusters:
    """The bridge's cluster job: converges clusters (serialised per cluster), re-reads one
    when a member goes away, and lists them all in a resync."""

    def __init__(
        self,
        client: DrpClient,
        config: BridgeConfig,
        live_nodes: Callable[[str], Awaitable[NodeLoads]],
        locks: KeyedLocks,
        tasks: TaskSet,
        bad: BadInput,
        stats: Counter[str],
        registered: Callable[[], Registered] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.live_nodes = live_nodes
        self.registered = registered
        self.locks = locks
        self.tasks = tasks
        self.bad = bad
        self.stats = stats
        self.pending: Coalescer[PendingCluster] = Coalescer(config.coalesce_s)
        self.kinds: dict[str, str] = {}  # cluster uuid -> kind (clusters | resource_brokers)

    def offer(self, kind: str, uuid: str, cluster: AnyCluster | None) -> None:
        """A cluster changed (None: deleted); converged when its window closes."""
        self.stats["cluster_events"] += 1
        if cluster is not None:
            self.kinds[uuid] = kind
        self.pending.offer(uuid, (kind, cluster))

    def spawn(self, kind: str, uuid: str, cluster: AnyCluster | None) -> None:
        self.tasks.spawn(self.converge(kind, uuid, cluster), f"cluster {uuid}")

    def member_gone(self, cluster_uuid: str) -> None:
        """A member of ``cluster_uuid`` went away: re-read the cluster to top it up."""
        if cluster_uuid in self.kinds:
            self.tasks.spawn(self._refetch(cluster_uuid), f"cluster {cluster_uuid} re-read")

    async def converge(
        self, kind: str, uuid: str, cluster: AnyCluster | None, aggregated: bool = False
    ) -> bool:
        """Give one cluster its count of members in DRP; never raises (logs and counts).

        ``aggregated``: ``cluster``'s params already include its profiles' (a listing with
        ``aggregate=true``); otherwise a cluster with profiles is read again with them.

        Returns:
            Whether it succeeded (else the next event or resync retries).
        """
        try:
            async with self.locks.hold(f"cluster:{uuid}"):
                if cluster is not None and cluster.profiles and not aggregated:
                    cluster = await self._aggregated(kind, uuid)  # params may come from them
                await reconcile_cluster(
                    self.client,
                    kind,
                    cluster,
                    uuid,
                    self.config.broker_name,
                    self.live_nodes,
                    self.bad,
                    self.registered,
                )
            if cluster is None:
                self.kinds.pop(uuid, None)
            return True
        except BadObject as exc:
            self.bad.object(exc)
        except CtxpoolError as exc:
            self.stats["errors"] += 1
            log.warning("cluster %s: not converged (%s); the next resync retries", uuid, exc)
        except Exception:
            self.stats["errors"] += 1
            log.error("cluster %s: not converged (bug?); the next resync retries", uuid,
                      exc_info=True)  # fmt: skip
        return False

    async def _aggregated(self, kind: str, uuid: str) -> AnyCluster | None:
        """The cluster as DRP has it now, with its profiles' params (None: deleted).

        Raises:
            DrpError: the call failed. BadObject: the cluster has the wrong shape.
        """
        path = f"/api/v3/{kind}/{quote(uuid, safe='')}?aggregate=true"
        try:
            raw = await self.client.request("GET", path)
        except DrpNotFoundError:
            return None
        return parse_cluster(kind, raw, uuid)

    async def _refetch(self, uuid: str) -> None:
        kind = self.kinds.get(uuid, "clusters")
        try:
            raw = await self.client.request("GET", f"/api/v3/{kind}/{quote(uuid, safe='')}")
            cluster = parse_cluster(kind, raw, uuid)
        except DrpError as exc:
            log.warning("cluster %s: not re-read (%s); the next resync retries", uuid, exc)
            return
        except BadObject as exc:
            self.bad.object(exc)
            return
        self.pending.offer(uuid, (kind, cluster))

    async def resync(self, members: dict[str, list[str]]) -> None:
        """Converge every cluster and broker DRP lists; drain members whose cluster is gone.

        Args:
            members: cluster uuid -> its members, as the machine listing showed them.

        Raises:
            DrpError: listing failed.
        """
        listed: set[str] = set()
        jobs: list[tuple[str, str, AnyCluster | None]] = []
        for kind in sorted(CLUSTER_TYPES):
            async for page in self.client.list_pages(kind, "aggregate=true", self.config.page_size):
                for raw in page:
                    try:
                        cluster = parse_cluster(kind, raw)
                    except BadObject as exc:
                        self.bad.object(exc)
                        continue
                    listed.add(cluster.uuid)
                    self.kinds[cluster.uuid] = kind
                    self.pending.drain_key(cluster.uuid)
                    jobs.append((kind, cluster.uuid, cluster))
        for uuid in set(members) - listed:
            jobs.append((self.kinds.get(uuid, "clusters"), uuid, None))
        for kind, uuid, listed_cluster in jobs:  # one at a time: a resync must not flood DRP
            await self.converge(kind, uuid, listed_cluster, aggregated=True)


__all__ = ["Clusters", "Plan", "list_members", "member_object", "plan", "reconcile_cluster"]
